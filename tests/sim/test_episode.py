"""The one recording loop: a controller that says it is done ends the episode through the env's judge."""

from __future__ import annotations

from typing import Any

import numpy as np

from s2robot.sim.episode import run_episode


class _Env:
    """Steps forever (never terminates); ``end_episode`` is the judge's verdict when asked."""

    def __init__(self, verdict: bool | None) -> None:
        self.steps, self.asked = 0, False
        if verdict is not None:
            self.end_episode = lambda: setattr(self, "asked", True) or verdict

    @property
    def unwrapped(self) -> _Env:
        return self

    def reset(self, seed: int, options: Any = None) -> tuple[dict, dict]:
        return {"proprio": np.zeros(8, np.float32)}, self._info()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.steps += 1
        return {"proprio": np.zeros(8, np.float32)}, 0.0, False, self.steps >= 50, self._info()

    def _info(self) -> dict:
        return {"cube_pos": np.zeros(3), "is_success": False, "lift_height": 0.0}


class _Operator:
    """Acts 3 steps, then presses Enter."""

    def __init__(self) -> None:
        self.calls, self.done = 0, False

    def __call__(self, obs: dict, info: dict) -> np.ndarray:
        self.calls += 1
        self.done = self.calls >= 3
        return np.zeros(8, np.float32)


def observe(obs: dict, info: dict, label: np.ndarray, executed: np.ndarray) -> dict:
    return {"action": label}


def test_done_ends_the_episode_with_the_judges_verdict() -> None:
    """Enter after 3 steps: 3 steps recorded, the judge is asked, its answer is the episode's success."""
    env = _Env(verdict=True)
    data, meta = run_episode(env, 0, lambda obs, info: _Operator(), observe)
    assert data["action"].shape == (3, 8) and env.steps == 3 and env.asked and meta["success"] is True


def test_done_without_a_judge_keeps_the_steps_verdict() -> None:
    """An env without ``end_episode`` (the simulated one): the episode ends, success as the steps saw it."""
    env = _Env(verdict=None)
    _, meta = run_episode(env, 0, lambda obs, info: _Operator(), observe)
    assert env.steps == 3 and meta["success"] is False
