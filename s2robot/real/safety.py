"""Safety limits applied in one place, before anything is sent to the arm, with a counter for every intervention.

``SafetyConfig`` holds every limit (conservative defaults; each one is a config field). ``SafetyFilter.apply`` turns a
requested joint target into the one that may be sent: at most ``max_joint_step`` from the last commanded target,
inside the joint limits shrunk by ``joint_margin``, with the whole hand (forward kinematics of its corners and any
``tool_points``, ``real.kinematics.hand_points``) inside the workspace box and the elbow and wrist above the table —
a step that would leave them is shortened until it does not. Moves that are not control steps (the reset move to a
start pose) go through ``SafetyFilter.check_move`` and are refused before anything moves; start poses are drawn by
``sample_start`` (draws that leave the box are drawn again) from a noise that ``check_start`` bounds at config time.
``check_action`` refuses what must never reach the arm (wrong shape, NaN, inf): the env stops the arm and raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from s2robot.common.checks import check_keys
from s2robot.real.kinematics import HAND_POINTS, hand_points, joint_frames

# Joint position limits [rad] from Franka's datasheets (libfranka's robot-specific limits).
JOINT_LIMITS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fr3": ((-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159),
            (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159)),
    "panda": ((-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
              (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)),
}


@dataclass
class SafetyConfig:
    """Limits of the arm and its cell. Every one is applied before a command is sent.

    robot: ``fr3`` or ``panda`` (selects the joint limits)
    joint_margin: the joint limits are shrunk by this much on each side [rad]
    max_joint_step: largest change of any joint target per 0.1 s control step [rad] (the simulated env's
        MAX_JOINT_DELTA: 1 rad/s)
    workspace: box that holds the whole hand in the robot base frame, (x_min, x_max, y_min, y_max, z_min, z_max) [m]:
        every corner of the hand's housing and fingertips (``real.kinematics.HAND_POINTS``) and every ``tool_points``
        point. The housing reaches 3–11 cm around the fingertip, so x_min 0.20 keeps the fingertip centre ≥ 0.23 m in
        front of the base (0.25 when only it was checked) and lets the hand turn fully at home (fingertip x 0.307);
        z_min keeps the fingertips' lowest edge 5 mm above the table (the fingertip centre, 9 mm above that edge,
        reaches the resting cube's centre 2 cm up)
    tool_points: further points that must stay inside the workspace, in the hand frame (origin at the flange, z
        towards the fingertips) [m], one (x, y, z) each: a wrist camera's mount, a tool
    table_z: height of the table top in the base frame [m]; the elbow and wrist joints stay ``LINK_RADIUS`` above
        it, and workspace z_min may not lie below it
    max_tracking_error: largest distance of any measured joint from its commanded target [rad]; further while not
        closing the gap (blocked, pushed, or not following) stops the arm and names the joint. At factor 0.5 the
        arm follows about one ``max_joint_step`` behind
    relative_dynamics_factor: scales the arm's velocity, acceleration and jerk limits for every motion (0, 1]; at
        0.5 the arm follows 10 Hz targets about one step behind (0.25: two steps, and the scripted pick takes ~60
        steps instead of ~45; measured in franky-sim)
    torque_threshold: per joint (7,), the torque above which libfranka's collision reflex stops the arm [N m]
        (libfranka's defaults; the wrist joints 5-7 are rated 12 N m, so one value for all would never trip them)
    force_threshold: per axis (6,: x y z, then torque about x y z), the end-effector wrench that trips it [N, N m]
    gripper_speed: finger speed when opening or closing [m/s]
    grasp_force: force the closed gripper holds with [N]
    home_speed: relative dynamics factor of the (blocking) move to the start pose at reset
    """

    robot: str = "fr3"
    joint_margin: float = 0.05
    max_joint_step: float = 0.1
    workspace: list[float] = field(default_factory=lambda: [0.20, 0.80, -0.40, 0.40, 0.005, 0.70])
    tool_points: list[list[float]] = field(default_factory=list)
    table_z: float = 0.0
    max_tracking_error: float = 0.3
    relative_dynamics_factor: float = 0.5
    torque_threshold: list[float] = field(default_factory=lambda: [20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0])
    force_threshold: list[float] = field(default_factory=lambda: [20.0, 20.0, 20.0, 25.0, 25.0, 25.0])
    gripper_speed: float = 0.05
    grasp_force: float = 20.0
    home_speed: float = 0.15

    def __post_init__(self) -> None:
        if self.robot not in JOINT_LIMITS:
            raise ValueError(f"safety.robot must be one of {sorted(JOINT_LIMITS)}, got {self.robot!r}")
        if not 0 <= self.joint_margin < 0.5:
            raise ValueError(f"safety.joint_margin must be in [0, 0.5) [rad], got {self.joint_margin}")
        if not 0 < self.max_joint_step <= 0.3:
            raise ValueError(f"safety.max_joint_step must be in (0, 0.3] [rad per 0.1 s step], got "
                             f"{self.max_joint_step}")
        box = list(self.workspace)
        if len(box) != 6 or not all(math.isfinite(v) for v in box) or not all(box[i] < box[i + 1] for i in (0, 2, 4)):
            raise ValueError("safety.workspace must be [x_min, x_max, y_min, y_max, z_min, z_max] [m] with each "
                             f"min < max, got {self.workspace}")
        self._check_cell()
        for name in ("relative_dynamics_factor", "home_speed"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"safety.{name} must be in (0, 1], got {getattr(self, name)}")
        for name, n in (("torque_threshold", 7), ("force_threshold", 6)):
            values = list(getattr(self, name))
            if len(values) != n or not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"safety.{name} must be {n} finite values > 0, got {getattr(self, name)}")
        for name in ("gripper_speed", "grasp_force"):
            if not getattr(self, name) > 0:
                raise ValueError(f"safety.{name} must be > 0, got {getattr(self, name)}")

    def _check_cell(self) -> None:
        """The table, the tool points and the tracking bound (``__post_init__``, after the workspace)."""
        if not (math.isfinite(self.table_z) and self.table_z <= self.workspace[4]):
            raise ValueError(f"safety.table_z must be finite and ≤ workspace z_min {self.workspace[4]} [m] (the box "
                             f"may not reach into the table), got {self.table_z}")
        points = [list(p) for p in self.tool_points]
        if not all(len(p) == 3 and all(math.isfinite(v) and abs(v) < 0.5 for v in p) for p in points):
            raise ValueError("safety.tool_points must be a list of (x, y, z) points in the hand frame [m], each "
                             f"within 0.5 m of the flange, e.g. [[0.07, 0.0, 0.03]], got {self.tool_points}")
        if not self.max_joint_step < self.max_tracking_error <= 1.0:
            raise ValueError(f"safety.max_tracking_error must be in (max_joint_step = {self.max_joint_step}, 1] [rad] "
                             f"(the arm follows about one step behind), got {self.max_tracking_error}")

    @classmethod
    def from_options(cls, values: Mapping[str, Any] | SafetyConfig | None) -> SafetyConfig:
        """A SafetyConfig from ``env.options.safety`` (a mapping of its fields, or one already built); a misspelt
        field is a ValueError naming the valid ones."""
        if isinstance(values, SafetyConfig):
            return values
        values = dict(values or {})
        check_keys(values, [f.name for f in fields(cls)], "env.options.safety")
        return cls(**values)

    @property
    def joint_limits(self) -> np.ndarray:
        """(7, 2) [rad]: the robot's limits shrunk by ``joint_margin``."""
        low, high = (np.asarray(v) for v in JOINT_LIMITS[self.robot])
        return np.stack([low + self.joint_margin, high - self.joint_margin], axis=1)


def check_action(action: np.ndarray) -> np.ndarray:
    """``action`` as float64 (8,) if it is one (7 joint values + gripper) and finite, else ValueError naming why."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (8,):
        raise ValueError(f"action must have shape (8,) (7 joint values + gripper), got shape {a.shape}; "
                         "nothing was sent and the arm is stopped")
    if not np.all(np.isfinite(a)):
        bad = np.flatnonzero(~np.isfinite(a)).tolist()
        raise ValueError(f"action must be finite, got NaN or inf at index {bad}: {a.tolist()}; nothing was sent "
                         "and the arm is stopped")
    return a


# Differences below this are not interventions [rad]: a float32 action at the step bound (0.1 → 0.10000000149) is not
# a clipped one.
_TOL = 1e-6


LINK_RADIUS = 0.07  # the elbow's and wrist's joint frames stay this far above the table [m] (FR3 links: ~6 cm)
TABLE_JOINTS = (3, 4, 5, 6)  # joint frames 4–7 (0-based rows of kinematics.joint_frames): elbow and wrist
PATH_STEP = 0.01  # a move's path is checked every this much travel of its furthest-moving joint [rad]
START_REDRAWS = 100  # start-noise draws at reset before the start pose is refused
MIN_START_INSIDE = 0.5  # smallest share of start-noise draws that must keep the hand inside the box (config time)
_SHARE_DRAWS = 256  # fixed draws (seed 0) that estimate that share


class SafetyError(RuntimeError):
    """A move the safety limits refuse before it is sent: nothing moved."""


def box_violation(point: np.ndarray, box: np.ndarray) -> float:
    """How far (3,) ``point`` lies outside the box (6,) [m]; 0 inside."""
    low, high = box[0::2], box[1::2]
    return float(np.linalg.norm(np.maximum(low - point, 0) + np.maximum(point - high, 0)))


class SafetyFilter:
    """Turns requested joint targets into sendable ones, checks whole moves, and counts each kind of intervention."""

    def __init__(self, cfg: SafetyConfig) -> None:
        self.cfg = cfg
        self.limits = cfg.joint_limits  # (7, 2)
        self.box = np.asarray(cfg.workspace, dtype=np.float64)  # (6,)
        self.tool = np.asarray(cfg.tool_points, dtype=np.float64).reshape(-1, 3)  # (M, 3) hand frame
        self.point_names = [*HAND_POINTS,
                            *(f"tool point {list(p)}" for p in cfg.tool_points),
                            *(f"joint {j + 1}" for j in TABLE_JOINTS)]
        self.counts = {"step": 0, "joint_limit": 0, "workspace": 0}

    def reset_counts(self) -> None:
        self.counts = dict.fromkeys(self.counts, 0)

    def outside(self, q: np.ndarray) -> np.ndarray:
        """How far [m] each checked point lies outside its bound at joints q (7,), 0 where inside, in the order of
        ``point_names``: the hand's points and ``tool_points`` outside the workspace box, then the elbow and wrist
        joints closer than ``LINK_RADIUS`` to the table."""
        frames = joint_frames(q)
        points = hand_points(frames[7], self.tool)  # (N, 3)
        low, high = self.box[0::2], self.box[1::2]
        box = np.linalg.norm(np.maximum(low - points, 0) + np.maximum(points - high, 0), axis=1)
        table = np.maximum(self.cfg.table_z + LINK_RADIUS - frames[list(TABLE_JOINTS), 2, 3], 0.0)
        return np.r_[box, table]

    def violation(self, q: np.ndarray) -> float:
        """How far [m] the worst checked point lies outside its bound at joints q (7,); 0 when all are inside."""
        return float(self.outside(q).max())

    def describe(self, q: np.ndarray) -> str:
        """Which checked point lies furthest outside at joints q (7,), and by how much, in words."""
        out = self.outside(q)
        i = int(out.argmax())
        where = "outside safety.workspace" if i < len(out) - len(TABLE_JOINTS) else \
            f"below {LINK_RADIUS} m above the table (safety.table_z = {self.cfg.table_z})"
        return f"the {self.point_names[i]} {1000 * out[i]:.1f} mm {where}"

    def within_limits(self, q: np.ndarray) -> bool:
        return bool(np.all((self.limits[:, 0] <= q) & (q <= self.limits[:, 1])))

    def apply(self, target: np.ndarray, commanded: np.ndarray) -> np.ndarray:
        """The sendable joint target (7,) [rad] for a requested ``target`` (7,), given the last ``commanded`` one.

        Order: the per-step bound around ``commanded``, the (shrunk) joint limits, then the workspace box and the
        table: if any checked point would end up outside (further out than the worst one is now), the step is
        shortened by bisection to the longest fraction that stays inside (or no further out).
        """
        step = np.clip(target - commanded, -self.cfg.max_joint_step, self.cfg.max_joint_step)
        self.counts["step"] += int(not np.allclose(step, target - commanded, rtol=0, atol=_TOL))
        safe = np.clip(commanded + step, self.limits[:, 0], self.limits[:, 1])
        self.counts["joint_limit"] += int(not np.allclose(safe, commanded + step, rtol=0, atol=_TOL))
        allowed = self.violation(commanded)
        if self.violation(safe) <= allowed:
            return safe
        self.counts["workspace"] += 1
        lo, hi = 0.0, 1.0  # fraction of the step from commanded towards safe; lo always acceptable
        for _ in range(20):
            mid = (lo + hi) / 2
            if self.violation(commanded + mid * (safe - commanded)) <= allowed:
                lo = mid
            else:
                hi = mid
        return commanded + lo * (safe - commanded)

    def check_move(self, start: np.ndarray, goal: np.ndarray, what: str = "the move") -> None:
        """SafetyError, before anything moves, unless ``goal`` (7,) [rad] is inside the (shrunk) joint limits and every
        pose on the straight joint-space path from ``start`` (7,) keeps the checked points inside (or no further out
        than at ``start``), checked every ``PATH_STEP`` of travel. A franky ``JointMotion`` from rest to rest is
        synchronized across the joints: it starts and ends on this path and stays close to it in between."""
        start, goal = np.asarray(start, dtype=np.float64), np.asarray(goal, dtype=np.float64)
        if not self.within_limits(goal):
            raise SafetyError(f"{what} to {goal.round(3).tolist()} was refused before moving: outside the joint limits "
                              f"shrunk by safety.joint_margin {self.limits.round(3).tolist()}")
        allowed = self.violation(start)
        n = max(1, int(np.ceil(np.abs(goal - start).max() / PATH_STEP)))
        for k in range(1, n + 1):
            q = start + (k / n) * (goal - start)
            if self.violation(q) > allowed + 1e-9:
                raise SafetyError(f"{what} to {goal.round(3).tolist()} was refused before moving: {k / n:.0%} of the "
                                  f"way there it would put {self.describe(q)}. The arm is stopped where it was; "
                                  "check the start pose (home_q, joint_noise) against safety.workspace")

    def share_inside(self, home: np.ndarray, noise: float) -> float:
        """The share of start poses ``home`` ± uniform ``noise`` [rad] (fixed draws, seed 0) inside the limits with
        every checked point inside: how often ``sample_start`` keeps its first draw."""
        unit = np.random.default_rng(0).uniform(-1.0, 1.0, size=(_SHARE_DRAWS, 7))
        qs = np.asarray(home, dtype=np.float64) + noise * unit
        return float(np.mean([self.within_limits(q) and self.violation(q) == 0 for q in qs]))


def sample_start(home: np.ndarray, noise: float, rng: np.random.Generator, safety: SafetyFilter) -> np.ndarray:
    """A start pose (7,) [rad]: ``home`` plus uniform noise in ±``noise`` per joint, drawn again while the draw leaves
    the joint limits or puts any checked point outside (up to ``START_REDRAWS`` draws, then SafetyError). Drawing
    again, rather than clipping or refusing the episode, keeps the start uniform over the safe draws and each seed's
    start reproducible; ``check_start`` keeps the noise where most first draws are safe."""
    home = np.asarray(home, dtype=np.float64)
    for _ in range(START_REDRAWS):
        q = home + rng.uniform(-noise, noise, size=7)
        if safety.within_limits(q) and safety.violation(q) == 0:
            return q
    raise SafetyError(f"no start pose within joint_noise={noise} rad of home_q kept the hand inside safety.workspace "
                      f"in {START_REDRAWS} draws: lower joint_noise")


def check_start(home: np.ndarray, noise: float, cfg: SafetyConfig) -> None:
    """ValueError unless the home pose (7,) [rad] lies inside the joint limits with every checked point inside, and
    at least ``MIN_START_INSIDE`` of the start poses drawn with ``noise`` [rad] do too (config time: before
    anything connects); the message gives the largest noise that would pass."""
    safety, q = SafetyFilter(cfg), np.asarray(home, dtype=np.float64)
    if q.shape != (7,) or not safety.within_limits(q):
        raise ValueError(f"home_q must be 7 joint positions inside the safety limits {safety.limits.tolist()}, got "
                         f"{q.tolist()}")
    if safety.violation(q) > 0:
        raise ValueError(f"home_q puts {safety.describe(q)}: move the box or the home pose")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"joint_noise must be a finite value ≥ 0 [rad], got {noise}")
    share = safety.share_inside(q, noise) if noise > 0 else 1.0
    if share < MIN_START_INSIDE:
        lo, hi = 0.0, float(noise)
        for _ in range(12):  # bisect the largest noise whose share passes
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if safety.share_inside(q, mid) >= MIN_START_INSIDE else (lo, mid)
        raise ValueError(f"joint_noise={noise} rad: only {share:.0%} of the start poses it draws around home_q keep "
                         f"the hand inside safety.workspace and the joint limits (at least {MIN_START_INSIDE:.0%} "
                         f"must); use joint_noise ≤ {lo:.3f} rad (the simulated recipe uses 0.02), or move home_q")
