"""Background inference: every executed action is the one its chunk planned for that step; stale ones dropped."""

from __future__ import annotations

import threading
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
    with ThreadPoolExecutor(1) as pool:
        actions = run(wrapper := PrefetchingPolicy(policy, prefetch=1, executor=pool), 12)
        wrapper.close()  # waits for the pending prediction; the pool is the test's to end
        assert not pool._shutdown
    assert all(sum(divmod(round(a), 100)) == t for t, a in enumerate(actions))
    assert wrapper.stats["waits"] >= 1


def test_real_predictions_in_a_thread_match_shapes_and_history() -> None:
    """With the real transformer in a worker thread: (B, A) actions, the wrapped policy's history advances."""
    data, _ = episode_data()
    policy = make_policy(tiny(t_act=8, execute_steps=4), data).eval()
    obs = {**{k: np.zeros((2, d), np.float32) for k, d in DIMS.items()}, "proprio": np.zeros((2, 8), np.float32)}
    with PrefetchingPolicy(policy, prefetch=2) as wrapper:
        wrapper.reset(batch_size=2)
        for _ in range(10):
            action = wrapper.act(obs)
            assert action.shape == (2, 8) and torch.isfinite(action).all()
        assert policy._t == 10 and wrapper.stats["chunks"] >= 2
        assert wrapper._pending is not None  # a prediction was started in the worker after the last step


def test_close_waits_for_the_running_prediction_and_ends_the_worker_thread() -> None:
    """Nothing runs on in the background after close: the pending prediction is waited for, the thread is gone."""
    data, _ = episode_data()
    policy, release = step_coded(make_policy(tiny(t_act=8, execute_steps=4), data).eval()), threading.Event()
    predict = policy.predict_chunk
    policy.predict_chunk = lambda window: release.wait() and predict(window)  # the worker's plans wait for release
    wrapper = PrefetchingPolicy(policy, prefetch=1)
    wrapper.reset(batch_size=1)
    release.set()
    wrapper.act(obs_at(0))  # the first step plans in this thread ...
    release.clear()
    for t in range(1, 4):
        wrapper.act(obs_at(t))  # ... and the third started the next plan in the worker, held there
    (_, future), workers = wrapper._pending, [t for t in threading.enumerate() if t.name.startswith("policy-prefetch")]
    assert len(workers) == 1 and not future.done()
    threading.Timer(0.1, release.set).start()
    wrapper.close()  # returns only once the held plan has run
    assert future.done() and future.result().shape == (1, 8, 8) and not workers[0].is_alive()


def test_refuses_ensembling_and_a_prefetch_that_leaves_no_chunk() -> None:
    """Only receding execution prefetches; prefetch must leave execute_steps fresh actions of the chunk."""
    data, _ = episode_data()
    with pytest.raises(ValueError, match="receding"):
        PrefetchingPolicy(make_policy(tiny(execution="ensemble"), data), prefetch=1)
    with pytest.raises(ValueError, match="prefetch must be"):
        PrefetchingPolicy(make_policy(tiny(t_act=8, execute_steps=4), data), prefetch=4)


# --- the encoder in the background too: act gets the relay's frame rows, the worker encodes them ---------------------
ONE_CAMERA = {"feat_front": 12}


class Manual:
    """An executor that runs nothing until ``run_all``: what the worker thread would do, in lockstep with the test."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Future, Callable[..., object], tuple]] = []

    def submit(self, fn: Callable[..., object], *args: object) -> Future:
        future: Future = Future()
        self.jobs.append((future, fn, args))
        return future

    def run_all(self) -> None:
        while self.jobs:
            future, fn, args = self.jobs.pop(0)
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except Exception as err:  # as a thread pool does: the future holds the error
                    future.set_exception(err)


class PixelEncoder:
    """frames (n, S, S, 3) uint8 → (n, 12) float: the first 12 pixel values; counts its calls."""

    calls = 0

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        self.calls += 1
        return torch.from_numpy(np.asarray(frames).reshape(len(frames), -1)[:, :12].astype(np.float32))

    def describe(self) -> dict[str, str]:
        return {"fingerprint": "pixels"}


def one_camera_policy(**cfg: object) -> ChunkTransformerPolicy:
    from s2robot.data.normalize import Normalizer

    rng = np.random.default_rng(0)
    data = {"feat_front": rng.normal(size=(20, 12)).astype(np.float32), "proprio": rng.normal(size=(20, 8)),
            "action": rng.normal(0.0, 0.05, size=(20, 8))}
    norm = Normalizer.fit({k: np.asarray(v, np.float32) for k, v in data.items()})
    return ChunkTransformerPolicy(tiny(t_act=8, execute_steps=4, **cfg), ONE_CAMERA, normalizer=norm).eval()


def frame_at(t: int, batch: int = 1) -> np.ndarray:
    return np.full((batch, 4, 4, 3), t % 256, np.uint8)  # (B, S, S, 3)


def test_background_encoder_gives_the_actions_of_encoding_in_the_loop() -> None:
    """Encoding in the worker (frames relayed) acts exactly as encoding in the loop and prefetching the policy only:
    the same history, so the same actions, each planned for its step."""
    encoder = PixelEncoder()
    loop = PrefetchingPolicy(one_camera_policy(), prefetch=1, executor=Immediate())
    background = PrefetchingPolicy(one_camera_policy(), prefetch=1, executor=Immediate(), encoder=encoder)
    background.policy.load_state_dict(loop.policy.state_dict())
    for wrapper in (loop, background):
        wrapper.reset(batch_size=2)
    for t in range(15):
        proprio = np.full((2, 8), 0.01 * t, np.float32)
        a = loop.act({"feat_front": encoder(frame_at(t, 2)), "proprio": proprio})
        b = background.act({"feat_front": background.relay(frame_at(t, 2)), "proprio": proprio})
        torch.testing.assert_close(a, b)
    assert background.stats == loop.stats and background.stats["dropped"] == 2 * (background.stats["chunks"] - 1)
    for key, value in loop.policy._history.items():
        torch.testing.assert_close(background.policy._history[key], value)


def test_the_step_sends_before_its_frame_is_encoded_and_plans_stay_on_their_steps() -> None:
    """Lockstep with the worker held: after the first step, act hands out its action without encoding (the frame
    waits for the worker), the worker then encodes every step in order; an executed action is always the one its
    chunk planned for that step (prefetch + 1 stale actions dropped)."""
    encoder, manual = PixelEncoder(), Manual()
    policy = step_coded(one_camera_policy())
    wrapper = PrefetchingPolicy(policy, prefetch=2, executor=manual, encoder=encoder)
    wrapper.reset(batch_size=1)
    wrapper.act({"feat_front": wrapper.relay(frame_at(0)), "proprio": np.zeros((1, 8), np.float32)})
    assert encoder.calls == 1 and policy._t == 1  # the first step encodes and plans before it acts
    actions = [0.0]
    for t in range(1, 14):
        obs = {"feat_front": wrapper.relay(frame_at(t)), "proprio": np.full((1, 8), t, np.float32)}
        if len(wrapper._queue) == 0:
            manual.run_all()  # the plan is due: the worker has caught up by now
        before = encoder.calls
        actions.append(float(wrapper.act(obs)[0, 0]))
        assert encoder.calls == before  # this step's frame is not encoded before its action is handed out
        assert policy._t <= t  # ... nor pushed into the history
    manual.run_all()
    assert encoder.calls == 14 and policy._t == 14  # every frame encoded once, in step order
    for t, a in enumerate(actions):
        start, index = divmod(round(a), 100)
        assert start + index == t, (t, a)
    assert wrapper.stats["dropped"] == 3 * (wrapper.stats["chunks"] - 1)


def test_an_encoder_error_in_the_background_surfaces_at_the_next_step() -> None:
    class Broken(PixelEncoder):
        def __call__(self, frames: np.ndarray) -> torch.Tensor:
            self.calls += 1
            if self.calls > 1:
                raise ValueError("camera frame has the wrong size")
            return super().__call__(frames)

    manual = Manual()
    wrapper = PrefetchingPolicy(one_camera_policy(), prefetch=1, executor=manual, encoder=Broken())
    wrapper.reset(batch_size=1)
    obs = {"feat_front": wrapper.relay(frame_at(0)), "proprio": np.zeros((1, 8), np.float32)}
    wrapper.act(obs)
    wrapper.act(obs)
    manual.run_all()  # the second step's encoding fails in the worker
    with pytest.raises(ValueError, match="wrong size"):
        wrapper.act(obs)
