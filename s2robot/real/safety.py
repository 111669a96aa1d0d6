"""Safety limits applied in one place, before anything is sent to the arm, with a counter for every intervention.

``SafetyConfig`` holds every limit (conservative defaults; each one is a config field). ``SafetyFilter.apply`` turns a
requested joint target into the one that may be sent: at most ``max_joint_step`` from the last commanded target,
inside the joint limits shrunk by ``joint_margin``, and with the fingertip (forward kinematics, ``real.kinematics``)
inside the workspace box — a step that would leave the box is shortened until it does not. ``check_action`` refuses
what must never reach the arm (wrong shape, NaN, inf): the env stops the arm and raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from s2robot.real.kinematics import fingertip_pose

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
    workspace: fingertip box in the robot base frame, (x_min, x_max, y_min, y_max, z_min, z_max) [m]; z_min keeps
        the fingertip centre above the table (the cube's centre is 2 cm up)
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
    workspace: list[float] = field(default_factory=lambda: [0.25, 0.80, -0.40, 0.40, 0.01, 0.65])
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


def box_violation(point: np.ndarray, box: np.ndarray) -> float:
    """How far (3,) ``point`` lies outside the box (6,) [m]; 0 inside."""
    low, high = box[0::2], box[1::2]
    return float(np.linalg.norm(np.maximum(low - point, 0) + np.maximum(point - high, 0)))


class SafetyFilter:
    """Turns requested joint targets into sendable ones and counts each kind of intervention."""

    def __init__(self, cfg: SafetyConfig) -> None:
        self.cfg = cfg
        self.limits = cfg.joint_limits  # (7, 2)
        self.box = np.asarray(cfg.workspace, dtype=np.float64)  # (6,)
        self.counts = {"step": 0, "joint_limit": 0, "workspace": 0}

    def reset_counts(self) -> None:
        self.counts = dict.fromkeys(self.counts, 0)

    def apply(self, target: np.ndarray, commanded: np.ndarray) -> np.ndarray:
        """The sendable joint target (7,) [rad] for a requested ``target`` (7,), given the last ``commanded`` one.

        Order: the per-step bound around ``commanded``, the (shrunk) joint limits, then the workspace box: if the
        fingertip would end up outside it (further out than it is now), the step is shortened by bisection to the
        longest fraction that stays inside (or no further out).
        """
        step = np.clip(target - commanded, -self.cfg.max_joint_step, self.cfg.max_joint_step)
        self.counts["step"] += int(not np.allclose(step, target - commanded, rtol=0, atol=_TOL))
        safe = np.clip(commanded + step, self.limits[:, 0], self.limits[:, 1])
        self.counts["joint_limit"] += int(not np.allclose(safe, commanded + step, rtol=0, atol=_TOL))
        allowed = max(box_violation(fingertip_pose(commanded)[:3, 3], self.box), 0.0)
        if box_violation(fingertip_pose(safe)[:3, 3], self.box) <= allowed:
            return safe
        self.counts["workspace"] += 1
        lo, hi = 0.0, 1.0  # fraction of the step from commanded towards safe; lo always acceptable
        for _ in range(20):
            mid = (lo + hi) / 2
            q = commanded + mid * (safe - commanded)
            if box_violation(fingertip_pose(q)[:3, 3], self.box) <= allowed:
                lo = mid
            else:
                hi = mid
        return commanded + lo * (safe - commanded)
