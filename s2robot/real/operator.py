"""A scripted operator for the franky-sim rehearsal: presses the teleop keys a person would, from what they see.

A person teleoperating the arm (``real.teleop``) watches the cube and the hand and presses keys: w/s a/d and r/f to
bring the hand above the cube, f to lower it around the cube, space to close the hand, r to lift, Enter when the
cube is up. ``ScriptedOperator`` is that person as a ``KeySource``. Each control step the teleop shows it the
observation and info (``observe``): the fingertip position, the hand's yaw (forward kinematics of the measured
joints), the finger opening, and the cube's pose — the rehearsal's true pose stands in for the person's eyes (a real
cell measures none, so there it refuses to run). ``poll`` then returns key presses, and nothing else: the keys go
through the key map, the Cartesian target, the IK, the safety filter and franky exactly as a person's do.

Like a person holding a key, it presses at most ``keys_per_step`` keys a control step (a held key's auto-repeat is
~30 per second, 3 per 0.1 s step). Like a person who has recorded a few demos, it knows what a press does: it moves
the target one ``step``, and the target never runs more than ``lead`` ahead of the hand (``CartesianTeleop``). So
it keeps count of where its presses put the target and stops pressing once that is where it wants the hand, rather
than pressing on while the arm catches up (it follows a step or two behind); when the hand has stood still elsewhere
(the workspace box held the target), it goes by the hand.
"""

from __future__ import annotations

from enum import Enum
from functools import partial
from typing import Any

import numpy as np

from envs.expert import grasp_yaw, limit_norm
from s2robot.real.kinematics import fingertip_pose
from s2robot.real.teleop import DONE_KEY, GRIPPER_KEY, LEAD, YAW_LEAD, KeySource, teleop_policy

# The key a person presses to move the target one step along +/- each of x, y, z and yaw (``teleop.KEYMAP``).
_KEYS = (("w", "s"), ("a", "d"), ("r", "f"), ("q", "e"))
OPERATOR_NAME = "cartesian teleop, scripted operator"  # what a demo store's attrs say recorded it
STILL = 1e-3  # fingertip travel in one control step below which the hand stands still [m]
SETTLE_STEPS = 3  # steps the hand stands still, no key pressed, before the operator believes it stopped
LOST_DISTANCE = 0.03  # cube centre this far from the fingertip while lifting: the cube stayed behind [m]
FINGERS_STILL = 5e-4  # the finger opening shrank less than this in a step: the closing hand has stopped [m]


class Stage(Enum):
    """What the operator is doing, in order."""

    ABOVE = 0  # bring the open hand above the cube
    DOWN = 1  # lower it until the fingertips are level with the cube's centre
    CLOSE = 2  # close the hand and wait until the fingers stop
    LIFT = 3  # lift the cube
    DONE = 4  # hold it up, then press Enter


class ScriptedOperator(KeySource):
    """Presses teleop keys to pick the cube, from what a person at the cell sees (``observe``).

    step, yaw_step: how far one key press moves the teleop's target [m] / turns the hand [rad] (the teleop's own
    ``step``/``yaw_step``: a person learns them in the first minute); lead, yaw_lead: how far the teleop lets its
    target run ahead of the hand [m] / [rad] (its own ``lead``/``yaw_lead``). keys_per_step: most keys pressed in one
    0.1 s control step. hover: fingertip height above the cube's centre to line up at [m]; lift: how far to lift it [m].
    tolerance: fingertip error a person accepts before the next stage [m]. hold_steps: steps to hold the cube up
    before pressing Enter.
    """

    def __init__(self, step: float = 0.01, yaw_step: float = 0.1, lead: float = LEAD, yaw_lead: float = YAW_LEAD,
                 keys_per_step: int = 3, hover: float = 0.10, lift: float = 0.15, tolerance: float = 0.008,
                 hold_steps: int = 5) -> None:
        if not (min(step, yaw_step, lead, yaw_lead, hover, lift, tolerance) > 0 and keys_per_step >= 1):
            raise ValueError(f"step, yaw_step, lead, yaw_lead, hover, lift and tolerance must be > 0 and "
                             f"keys_per_step ≥ 1, got {step}, {yaw_step}, {lead}, {yaw_lead}, {hover}, {lift}, "
                             f"{tolerance}, {keys_per_step}")
        self.scale = np.array([step, step, step, yaw_step])  # (4,) one press in x, y, z [m] and yaw [rad]
        self.lead, self.yaw_lead = lead, yaw_lead
        self.keys_per_step, self.hover, self.lift, self.tolerance = int(keys_per_step), hover, lift, tolerance
        self.hold_steps = int(hold_steps)
        self.stage, self.stage_steps = Stage.ABOVE, 0
        self.pressed: np.ndarray | None = None  # (4,) where the presses so far put the target (x, y, z, yaw)
        self.hand: np.ndarray | None = None  # (4,) the hand seen this step (fingertip x, y, z [m], yaw [rad])
        self.still = 0  # steps the hand has stood still (moved < ``STILL`` a step) since the last motion key
        self.width, self.closing = np.nan, np.inf  # finger opening [m], and how much it shrank since the last step
        self.cube = np.full(3, np.nan)  # (3,) cube centre [m]
        self.cube_yaw = 0.0  # [rad]
        self.grasp: np.ndarray | None = None  # (3,) the fingertip where the hand closed [m]

    # ------------------------------------------------------------------------------------------- what it sees
    def observe(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        cube, quat = np.asarray(info["cube_pos"], np.float64), np.asarray(info["cube_quat"], np.float64)
        if not (np.all(np.isfinite(cube)) and np.all(np.isfinite(quat))):
            raise RuntimeError("the scripted operator looks at the cube's true pose, which only the franky-sim "
                               "rehearsal reports (env=franka_sim); on a real arm a person teleoperates: "
                               "controller=keyboard or controller=spacemouse")
        q = np.asarray(obs["proprio"][:7], np.float64)
        rot = fingertip_pose(q)[:3, :3]
        hand = np.r_[np.asarray(info["fingertip_pos"], np.float64), np.arctan2(rot[1, 0], rot[0, 0])]
        moved = np.inf if self.hand is None else float(np.linalg.norm(hand[:3] - self.hand[:3]))
        self.still = self.still + 1 if moved < STILL else 0
        width = float(obs["proprio"][7])
        self.closing, self.width = (np.inf if np.isnan(self.width) else self.width - width), width
        self.hand, self.cube, self.cube_yaw = hand, cube, grasp_yaw(quat)
        if self.pressed is None:
            self.pressed = hand.copy()

    # ------------------------------------------------------------------------------------------- what it presses
    def poll(self) -> list[str]:
        if self.hand is None:
            return []  # nothing seen yet
        self.stage_steps += 1
        keys = self._next_stage()
        if self.stage in (Stage.ABOVE, Stage.DOWN, Stage.LIFT):
            keys += self._motion_keys(self._goal())
        return keys

    def _next_stage(self) -> list[str]:
        """Move on to the next stage when this one's goal is reached; returns the gripper or Enter key it presses."""
        tip, cube = self.hand[:3], self.cube
        if self.stage is Stage.ABOVE and self._reached(self._goal()):
            self._set(Stage.DOWN)
        elif self.stage is Stage.DOWN and self._reached(self._goal()) and self.still >= 1:
            self._set(Stage.CLOSE)
            self.grasp = tip.copy()
            return [GRIPPER_KEY]
        elif self.stage is Stage.CLOSE and self.stage_steps > 2 and self.closing < FINGERS_STILL:
            self._set(Stage.LIFT)  # the fingers have stopped: on the cube
        elif self.stage in (Stage.LIFT, Stage.DONE) and np.linalg.norm(cube - tip) > LOST_DISTANCE:
            self._set(Stage.ABOVE)  # the cube stayed behind: open and try again
            return [GRIPPER_KEY]
        elif self.stage is Stage.LIFT and self._reached(self._goal()):
            self._set(Stage.DONE)
        elif self.stage is Stage.DONE and self.stage_steps > self.hold_steps:
            return [DONE_KEY]
        return []

    def _set(self, stage: Stage) -> None:
        self.stage, self.stage_steps = stage, 0

    def _goal(self) -> np.ndarray:
        """Where the operator wants the hand this stage (4,): fingertip x, y, z [m] and yaw [rad]."""
        yaw = self._nearest_grasp_yaw()
        if self.stage is Stage.ABOVE:
            return np.r_[self.cube[:2], self.cube[2] + self.hover, yaw]
        if self.stage is Stage.DOWN:
            return np.r_[self.cube, yaw]
        assert self.grasp is not None
        return np.r_[self.grasp[:2], self.grasp[2] + self.lift, self.pressed[3]]

    def _nearest_grasp_yaw(self) -> float:
        """The hand yaw nearest to the one pressed so far that puts the fingers on two opposite faces [rad]."""
        turn = (self.cube_yaw - self.pressed[3] + np.pi / 4) % (np.pi / 2) - np.pi / 4
        return float(self.pressed[3] + turn)

    def _reached(self, goal: np.ndarray) -> bool:
        """The hand is within ``tolerance`` of the goal (and within half a yaw press of its yaw)."""
        return bool(np.all(np.abs(goal[:3] - self.hand[:3]) < self.tolerance)
                    and abs(goal[3] - self.hand[3]) < self.scale[3])

    def _motion_keys(self, goal: np.ndarray) -> list[str]:
        """Up to ``keys_per_step`` presses towards ``goal`` (4,), one at a time on the axis furthest from it in
        presses, counted from where the presses so far put the target (or from the hand, once it stood still
        elsewhere)."""
        assert self.pressed is not None and self.hand is not None
        if self.still >= SETTLE_STEPS and np.any(np.abs(self.pressed - self.hand) > self.scale):
            self.pressed = self.hand.copy()  # the hand stopped short of the presses: go by what is seen
        left = (goal - self.pressed) / self.scale  # (4,) presses still needed per axis
        presses, keys = np.zeros(4), []
        for _ in range(self.keys_per_step):
            axis = int(np.argmax(np.abs(left)))
            if abs(left[axis]) < 0.5:
                break
            sign = 1.0 if left[axis] > 0 else -1.0
            keys.append(_KEYS[axis][0 if sign > 0 else 1])
            left[axis] -= sign
            presses[axis] += sign
        self.pressed = self._near_hand(self.pressed + presses * self.scale)
        if keys:
            self.still = 0  # the arm starts a step or two after a press: wait for it before judging where it stops
        return keys

    def _near_hand(self, target: np.ndarray) -> np.ndarray:
        """Where the teleop keeps a target (4,): at most ``lead`` [m] ahead of the fingertip and ``yaw_lead`` [rad]
        of the hand's yaw (``CartesianTeleop``), so the presses that would run further ahead are not counted."""
        turn = np.clip((target[3] - self.hand[3] + np.pi) % (2 * np.pi) - np.pi, -self.yaw_lead, self.yaw_lead)
        return np.r_[self.hand[:3] + limit_norm(target[:3] - self.hand[:3], self.lead), self.hand[3] + turn]


def scripted_operator_policy(step: float = 0.01, yaw_step: float = 0.1, lead: float = LEAD, yaw_lead: float = YAW_LEAD,
                             **operator: Any) -> Any:
    """A ``PolicyFactory`` (``record_demos(cfg, factory=...)``): ``CartesianTeleop`` driven by a fresh
    ``ScriptedOperator`` per episode, both with the same key ``step`` [m], ``yaw_step`` [rad] and leads. operator:
    further ``ScriptedOperator`` arguments. franky-sim only (the operator reads the cube's true pose)."""
    keys = {"step": step, "yaw_step": yaw_step, "lead": lead, "yaw_lead": yaw_lead}
    return teleop_policy(partial(ScriptedOperator, **keys, **operator), name=OPERATOR_NAME, **keys)

