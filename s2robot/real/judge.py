"""Who places the cube and says whether it was picked: the rehearsal scene (privileged state) or an operator.

``SceneJudge`` reads franky-sim's cube and contacts, so placement and success are automatic. ``OperatorJudge`` asks a
person at the cell: before an episode "place the cube at mark k (x, y)", after it whether the cube was, at any moment,
lifted ≥ 5 cm while held in the closed hand (the simulated env's success, ``envs.cube_pick``); in between nothing
measures the cube, so its position is reported as where it was placed (resting) and its orientation
as unknown (NaN). Its prompts take an ``ask`` function so tests script the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from envs.cube_pick import CUBE_REST_Z, LIFT_SUCCESS_HEIGHT

_UNKNOWN4 = np.full(4, np.nan)
# The simulated env's success (envs.cube_pick): at any step, the cube's centre ≥ LIFT_SUCCESS_HEIGHT above its rest
# while both fingers hold it and the hand is commanded closed. A cube dropped afterwards still counts.
SUCCESS_QUESTION = (f"at any moment of the episode, was the cube lifted ≥ {100 * LIFT_SUCCESS_HEIGHT:.0f} cm off the "
                    "table while held between the closed fingers (a later drop still counts)? [y/n] ")


class Judge(Protocol):
    def place(self, cube_xy: Sequence[float], label: str | None) -> None: ...

    def state(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """Cube centre (3,) [m], cube orientation (4,) (w, x, y, z), and whether both fingers touch it."""
        ...

    def final(self, success: bool) -> bool:
        """The episode's outcome, given whether the per-step check saw a success at any step."""
        ...


class SceneJudge:
    """The franky-sim rehearsal places the cube and reports its pose and the finger contacts."""

    def __init__(self, scene: Any) -> None:
        self.scene = scene

    def place(self, cube_xy: Sequence[float], label: str | None) -> None:
        self.scene.place_cube(cube_xy)

    def state(self) -> tuple[np.ndarray, np.ndarray, bool]:
        pos, quat = self.scene.cube_pose()
        return pos, quat, self.scene.fingers_touch_cube()

    def final(self, success: bool) -> bool:
        return success


class OperatorJudge:
    """A person places the cube at the printed mark and judges the lift (``scripts/real_arm.py sheet`` prints it)."""

    def __init__(self, ask: Callable[[str], str] = input) -> None:
        self.ask = ask
        self.placed = np.full(3, np.nan)  # where the operator put the cube (x, y, resting z) [m]

    def place(self, cube_xy: Sequence[float], label: str | None) -> None:
        mark = f"mark {label} " if label else ""
        self.ask(f"place the cube at {mark}(x {100 * cube_xy[0]:.1f} cm, y {100 * cube_xy[1]:.1f} cm), clear the "
                 "workspace, then press Enter to run ")
        self.placed = np.array([cube_xy[0], cube_xy[1], CUBE_REST_Z], dtype=np.float64)

    def state(self) -> tuple[np.ndarray, np.ndarray, bool]:
        return self.placed.copy(), _UNKNOWN4.copy(), False

    def final(self, success: bool) -> bool:
        while True:
            answer = self.ask(SUCCESS_QUESTION).strip().lower()
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")
