"""Background inference: every executed action is the one its chunk planned for that step; stale ones dropped."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest
import torch
from test_modeling import DIMS, episode_data, make_policy, tiny

from s2robot.policy.modeling import ChunkTransformerPolicy
from s2robot.policy.prefetch import PrefetchingPolicy


class Immediate:
    """An executor that runs each prediction at once (instant inference)."""

    def submit(self, fn: Callable[..., torch.Tensor], *args: object) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future


def step_coded(policy: ChunkTransformerPolicy, delay: float = 0.0) -> ChunkTransformerPolicy:
    """predict_chunk → chunk whose action i of a plan from step s is 100 s + i (s read from the proprio)."""

    def predict(window: dict[str, torch.Tensor]) -> torch.Tensor:
        time.sleep(delay)
        s = window["proprio"][:, -1, 0]  # (B,) the step of the newest observation
        i = torch.arange(policy.cfg.t_act, dtype=torch.float32)
        return (100 * s[:, None, None] + i[None, :, None]).expand(-1, -1, 8).clone()

    policy.predict_chunk = predict
    return policy


def obs_at(t: int) -> dict[str, np.ndarray]:
    return {**{k: np.zeros((1, d), np.float32) for k, d in DIMS.items()}, "proprio": np.full((1, 8), t, np.float32)}


def run(wrapper: PrefetchingPolicy, steps: int) -> list[float]:
    wrapper.reset(batch_size=1)
    return [float(wrapper.act(obs_at(t))[0, 0]) for t in range(steps)]


@pytest.mark.parametrize("prefetch", [1, 2])
def test_each_action_is_the_one_planned_for_its_step(prefetch: int) -> None:
    """Instant inference: chunk s's action for step t is executed at step t; prefetch + 1 stale actions dropped."""
    data, _ = episode_data()
    policy = step_coded(make_policy(tiny(t_act=8, execute_steps=4), data).eval())
    wrapper = PrefetchingPolicy(policy, prefetch=prefetch, executor=Immediate())
    actions = run(wrapper, 20)
    for t, a in enumerate(actions):
        start, index = divmod(round(a), 100)
        assert start + index == t, (t, a)  # never an action planned for another step
        assert 0 <= t - start <= prefetch + 4  # plans are at most prefetch + execute_steps steps old
    assert wrapper.stats["waits"] == 0 and wrapper.stats["dropped"] == (wrapper.stats["chunks"] - 1) * (prefetch + 1)


def test_slow_inference_waits_and_still_executes_the_planned_action() -> None:
    """A chunk later than the queue: the step waits for it (counted) and drops what passed meanwhile."""
    data, _ = episode_data()
    policy = step_coded(make_policy(tiny(t_act=8, execute_steps=4), data).eval(), delay=0.05)
    wrapper = PrefetchingPolicy(policy, prefetch=1, executor=ThreadPoolExecutor(1))
    actions = run(wrapper, 12)
    assert all(sum(divmod(round(a), 100)) == t for t, a in enumerate(actions))
    assert wrapper.stats["waits"] >= 1


def test_real_predictions_in_a_thread_match_shapes_and_history() -> None:
    """With the real transformer in a worker thread: (B, A) actions, the wrapped policy's history advances."""
    data, _ = episode_data()
    policy = make_policy(tiny(t_act=8, execute_steps=4), data).eval()
    wrapper = PrefetchingPolicy(policy, prefetch=2)
    wrapper.reset(batch_size=2)
    obs = {**{k: np.zeros((2, d), np.float32) for k, d in DIMS.items()}, "proprio": np.zeros((2, 8), np.float32)}
    for _ in range(10):
        action = wrapper.act(obs)
        assert action.shape == (2, 8) and torch.isfinite(action).all()
    assert policy._t == 10 and wrapper.stats["chunks"] >= 2


def test_refuses_ensembling_and_a_prefetch_that_leaves_no_chunk() -> None:
    """Only receding execution prefetches; prefetch must leave execute_steps fresh actions of the chunk."""
    data, _ = episode_data()
    with pytest.raises(ValueError, match="receding"):
        PrefetchingPolicy(make_policy(tiny(execution="ensemble"), data), prefetch=1)
    with pytest.raises(ValueError, match="prefetch must be"):
        PrefetchingPolicy(make_policy(tiny(t_act=8, execute_steps=4), data), prefetch=4)
