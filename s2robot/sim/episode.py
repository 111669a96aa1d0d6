"""Recording episodes: any policy in a gymnasium env, per-step camera frames, proprio and the recorded action.

A ``PolicyFactory`` builds, inside each worker, a callable ``policy(obs, info)`` that returns the action (8,) —
or an object with ``.label`` (the action to record) and ``.executed`` (the action to step with), as the scripted
expert's noise injection does. A teleop or another controller plugs in the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, ClassVar, Protocol

import numpy as np

from s2robot.data.keys import ACTION_SPACES, PRIVILEGED_CUBE, rgb_key
from s2robot.sim.env import EnvConfig, make_env


class Policy(Protocol):
    def __call__(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> Any: ...


PolicyFactory = Callable[[Any, int], Policy]  # (env, episode seed) -> policy


def expert_policy(noise_std: float, pace: float = 1.0) -> PolicyFactory:
    """The scripted expert, with seeded noise injection and its speeds × ``pace`` (``envs.expert.paced``; the
    simulated env's expert only), as a picklable factory."""
    return _ExpertFactory(noise_std, pace)


@dataclass(frozen=True)
class _ExpertFactory:
    noise_std: float
    pace: float = 1.0
    name: ClassVar[str] = "scripted expert"

    def __call__(self, env: Any, seed: int) -> Policy:
        from envs.expert import ExpertConfig, ScriptedExpert, paced

        rng = np.random.default_rng(seed) if self.noise_std > 0 else None
        make_expert = getattr(env.unwrapped, "make_expert", None)  # an env with its own expert (the Franka arm's)
        if make_expert is not None:
            if self.pace != 1.0:
                raise ValueError(f"expert_pace={self.pace} paces the simulated env's expert; on the arm franky's "
                                 "motions set a pick's pace: leave expert_pace=1")
            return make_expert(self.noise_std, rng).act
        return ScriptedExpert(env, noise_std=self.noise_std, rng=rng, config=paced(ExpertConfig(), self.pace)).act


# (obs, info, label action, executed action) -> that step's arrays
Observe = Callable[[dict[str, np.ndarray], dict[str, Any], np.ndarray, np.ndarray], dict[str, np.ndarray]]


class StopAfterSuccess:
    """Ends an episode ``extra`` steps after its first success, or at ``max_steps`` recorded steps (a post-success
    tail: the expert keeps lifting and holds, so every chunk a policy executes past the success step is trained)."""

    def __init__(self, max_steps: int, extra: int = 0) -> None:
        self.max_steps, self.extra, self.success_at = max_steps, extra, None

    def __call__(self, t: int, info: dict[str, Any]) -> bool:
        if self.success_at is None and info["is_success"]:
            self.success_at = t
        return (self.success_at is not None and t - self.success_at >= self.extra) or t + 1 >= self.max_steps


def run_episode(env: Any, seed: int, start: Callable[[dict, dict], Policy], observe: Observe,
                options: dict[str, Any] | None = None, stop: Callable[[int, dict], bool] | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The one recording loop (demos and rendered frames): ``reset(seed, options)``, ``policy = start(obs, info)``,
    then per step t: the policy's action, ``observe(obs, info, label, executed)`` → that step's arrays, and
    ``stop(t, info)`` ends the episode after step t; else the env steps until it terminates or truncates.

    Returns {key: (T, ...)} and {seed, cube_xy, success, length, max_lift}, plus ``variation`` (the scene parameters
    the env drew, ``envs.variation``) when the scene was varied.
    """
    obs, info = env.reset(seed=seed, options=options)
    cube, scene = info["cube_pos"], info.get("variation")
    policy = start(obs, info)
    steps: dict[str, list[np.ndarray]] = {}
    success, max_lift = False, 0.0
    for t in itertools.count():
        out = policy(obs, info)
        label, executed = (out.label, out.executed) if hasattr(out, "label") else (out, out)
        for key, value in observe(obs, info, label, executed).items():
            steps.setdefault(key, []).append(value)
        if stop is not None and stop(t, info):
            break
        obs, _, terminated, truncated, info = env.step(executed)
        success |= bool(info["is_success"])
        max_lift = max(max_lift, float(info["lift_height"]))
        if terminated or truncated:
            break
        if getattr(policy, "done", False):  # a teleoperator ended the episode (Enter): the env's judge decides
            end = getattr(env.unwrapped, "end_episode", None)
            success = end() if end is not None else success
            break
    meta = {"seed": seed, "cube_xy": [float(cube[0]), float(cube[1])], "success": success, "length": t + 1,
            "max_lift": max_lift}
    if scene:
        meta["variation"] = scene
    timer = getattr(env.unwrapped, "timer", None)  # a real arm's control-loop deadlines (s2robot.common.timing)
    if timer is not None:
        meta["timing"] = timer.summary()
    cell = getattr(env.unwrapped, "cell", None)  # a real arm's robot, host, cameras and limits (the recorder's attrs)
    if cell is not None:
        meta["cell"] = cell
    return {k: np.stack(v) for k, v in steps.items()}, meta


def observe_demo(cameras: list[str], obs: dict[str, np.ndarray], info: dict[str, Any], label: np.ndarray,
                 executed: np.ndarray) -> dict[str, np.ndarray]:
    """What a demo records per step: camera frames, proprio, the privileged cube position, and the action in both
    action spaces (``ACTION_SPACES``), each as the label (to learn) and as executed (to feed back as the previous
    action). A target is the commanded joint position the delta leads to (the env clips both the same way)."""
    label, executed = np.asarray(label, np.float64), np.asarray(executed, np.float64)
    base = np.r_[np.asarray(info["arm_target"], np.float64), 0.0]  # (8,) commanded position, gripper: absolute
    (delta, delta_x), (target, target_x) = ACTION_SPACES["delta"], ACTION_SPACES["absolute"]
    return {**{rgb_key(cam): obs[cam] for cam in cameras}, "proprio": np.asarray(obs["proprio"], np.float32),
            PRIVILEGED_CUBE: np.asarray(info["cube_pos"], np.float32),
            delta: label.astype(np.float32), delta_x: executed.astype(np.float32),
            target: (base + label).astype(np.float32), target_x: (base + executed).astype(np.float32)}


@dataclass(frozen=True)
class RecordJob:
    """Recording as a ``sim.pool`` job: one env per worker, ``run_episode`` with the factory's policy per seed."""

    env: EnvConfig
    factory: PolicyFactory
    tail_steps: int = 0  # steps recorded after the first success (0: the episode ends at success, as the env's)
    variation: str = "none"  # scene variation drawn per episode (``envs.variation``; the simulated env only)

    def setup(self) -> Any:
        cfg = EnvConfig(**{**asdict(self.env), "terminate_on_success": self.env.terminate_on_success and not
                           self.tail_steps})
        return make_env(cfg, render_mode=None)

    def run(self, env: Any, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        policy = self.factory(env, seed)  # built before the reset, as any controller would be
        stop = StopAfterSuccess(self.env.max_steps, self.tail_steps) if self.tail_steps else None
        options = {"variation": self.variation} if self.variation != "none" else None
        return run_episode(env, seed, lambda obs, info: policy, partial(observe_demo, list(self.env.cameras)),
                           options=options, stop=stop)

    def close(self, env: Any) -> None:
        env.close()
