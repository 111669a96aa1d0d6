"""Recording episodes: any policy in a gymnasium env, per-step camera frames, proprio and the recorded action.

A ``PolicyFactory`` builds, inside each worker, a callable ``policy(obs, info)`` that returns the action (8,) —
or an object with ``.label`` (the action to record) and ``.executed`` (the action to step with), as the scripted
expert's noise injection does. A teleop or another controller plugs in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from s2robot.data.keys import rgb_key
from s2robot.sim.env import EnvConfig, make_env


class Policy(Protocol):
    def __call__(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> Any: ...


PolicyFactory = Callable[[Any, int], Policy]  # (env, episode seed) -> policy


def expert_policy(noise_std: float) -> PolicyFactory:
    """The scripted expert, with seeded noise injection (a picklable factory)."""
    return _ExpertFactory(noise_std)


@dataclass(frozen=True)
class _ExpertFactory:
    noise_std: float

    def __call__(self, env: Any, seed: int) -> Policy:
        from envs.expert import ScriptedExpert

        rng = np.random.default_rng(seed)
        return ScriptedExpert(env, noise_std=self.noise_std, rng=rng if self.noise_std > 0 else None).act


def run_episode(
    env: Any, policy: Policy, seed: int, cameras: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One episode from ``reset(seed)``: per-step camera frames, proprio and the recorded actions."""
    obs, info = env.reset(seed=seed)
    start = info["cube_pos"]
    frames: dict[str, list[np.ndarray]] = {cam: [] for cam in cameras}
    proprio, actions = [], []
    success, max_lift = False, 0.0
    while True:
        out = policy(obs, info)
        label, executed = (out.label, out.executed) if hasattr(out, "label") else (out, out)
        for cam in cameras:
            frames[cam].append(obs[cam])
        proprio.append(obs["proprio"])
        actions.append(np.asarray(label, dtype=np.float32))
        obs, _, terminated, truncated, info = env.step(executed)
        success |= bool(info["is_success"])
        max_lift = max(max_lift, float(info["lift_height"]))
        if terminated or truncated:
            break
    data = {rgb_key(cam): np.stack(f) for cam, f in frames.items()}
    data |= {"proprio": np.stack(proprio).astype(np.float32), "action": np.stack(actions)}
    meta = {"seed": seed, "cube_xy": [float(start[0]), float(start[1])], "success": success,
            "length": len(actions), "max_lift": max_lift}
    return data, meta


@dataclass(frozen=True)
class RecordJob:
    """Recording as a ``sim.pool`` job: one env per worker, ``run_episode`` with the factory's policy per seed."""

    env: EnvConfig
    factory: PolicyFactory

    def setup(self) -> Any:
        return make_env(self.env, render_mode=None)

    def run(self, env: Any, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return run_episode(env, self.factory(env, seed), seed, list(self.env.cameras))

    def close(self, env: Any) -> None:
        env.close()
