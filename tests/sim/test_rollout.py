"""Evaluation rollouts: a dead env worker is reported with the episodes it ran, not a bare EOFError or a hang."""

from __future__ import annotations

import os
import signal
import time
import types

import numpy as np
import pytest
import torch

from s2robot.sim import rollout as R
from s2robot.sim.env import EnvConfig


class KillingPolicy(torch.nn.Module):
    """Zero actions; on its third step it SIGKILLs env worker 0 (a worker dying mid-evaluation)."""

    feature_keys = ("feat_front",)

    def __init__(self, envs: list) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.envs, self.calls = envs, 0

    def reset(self, batch_size: int) -> None:
        pass

    def act(self, obs: dict) -> torch.Tensor:
        self.calls += 1
        if self.calls == 3:
            os.kill(self.envs[0].processes[0].pid, signal.SIGKILL)
        return torch.zeros(len(obs["proprio"]), 8)


def test_a_killed_env_worker_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list = []
    real = R._make_envs
    monkeypatch.setattr(R, "_make_envs", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    episodes = R.eval_episodes([(0.5, 0.0), (0.55, 0.05)])
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"env worker 0 \(pid \d+, exit code -9\) died while running position 0 "
                                           r"repeat 0, position 1 repeat 0"):
        R.run_episodes(KillingPolicy(made), lambda x: torch.zeros(len(x), 4), EnvConfig(image_size=32, max_steps=20),
                       episodes, n_envs=2, progress=False)
    assert time.monotonic() - t0 < 60
    assert all(p.exitcode is not None for p in made[0].processes)  # the other worker is gone too


class HoldPolicy(torch.nn.Module):
    """Commands the first joint positions it sees, as absolute targets: the arm holds still only if the env
    runs in the policy's action space (as deltas these would be ~0.1-rad steps every time)."""

    feature_keys = ("feat_front",)
    action_space = "absolute"

    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def reset(self, batch_size: int) -> None:
        self.first = None

    def act(self, obs: dict) -> torch.Tensor:
        proprio = torch.as_tensor(obs["proprio"])
        if self.first is None:
            self.first = proprio.clone()
        return torch.cat([self.first[:, :7], torch.zeros(len(proprio), 1)], dim=1)


def test_the_env_runs_in_the_policy_action_space() -> None:
    episodes = R.eval_episodes([(0.5, 0.0)])
    results, _ = R.run_episodes(HoldPolicy(), lambda x: torch.zeros(len(x), 4), EnvConfig(image_size=32, max_steps=6),
                                episodes, n_envs=0, progress=False)
    home = results[0].final_fingertip
    results, _ = R.run_episodes(HoldPolicy(), lambda x: torch.zeros(len(x), 4), EnvConfig(image_size=32, max_steps=1),
                                episodes, n_envs=0, progress=False)
    assert max(abs(a - b) for a, b in zip(home, results[0].final_fingertip, strict=True)) < 0.01  # held still
    assert results[0].clipped_steps == 0


class CountingEncoder:
    """Features of ones; counts the frames it is given."""

    def __init__(self) -> None:
        self.frames = 0

    def __call__(self, x: object) -> torch.Tensor:
        self.frames += len(x)
        return torch.ones(len(x), 4)


def test_only_running_slots_are_encoded() -> None:
    """A wave encodes the frames of its running episodes only: 3 episodes in waves of 2 (the last padded) encode
    3 × max_steps frames, not 4 ×; the padded slot's features are zeros, the real ones the encoder's."""
    seen: list[torch.Tensor] = []

    class Recording(HoldPolicy):
        def act(self, obs: dict) -> torch.Tensor:
            seen.append(torch.as_tensor(obs["feat_front"]).clone())
            return super().act(obs)

    encoder = CountingEncoder()
    results, _ = R.run_episodes(Recording(), encoder, EnvConfig(image_size=32, max_steps=4),
                                R.eval_episodes([(0.5, 0.0), (0.55, 0.05), (0.6, -0.05)]), n_envs=2, progress=False)
    assert [r.steps for r in results] == [4, 4, 4] and encoder.frames == 12
    assert torch.equal(seen[-1], torch.tensor([[1.0] * 4, [0.0] * 4]))  # the last wave: a real slot, a padded one


def test_running_slots_keep_their_own_features() -> None:
    """With ended slots between running ones, each running slot gets its own frame's features and the ended ones
    zeros; a compiled encoder (one batch shape) gets every frame."""
    frames = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(5)])  # slot i's frame holds the value i
    calls: list[int] = []

    def encoder(x: np.ndarray) -> torch.Tensor:
        calls.append(len(x))
        return torch.as_tensor(np.asarray(x), dtype=torch.float32).reshape(len(x), -1)[:, :2]  # (n, 2): [i, i]

    running = np.array([False, True, False, True, True])
    feats = R.step_features(encoder, ["front"], {"front": frames}, {}, [], torch.device("cpu"), running)["feat_front"]
    assert calls == [3] and feats[:, 0].tolist() == [0.0, 1.0, 0.0, 3.0, 4.0]
    encoder.cfg = types.SimpleNamespace(compile="default")  # type: ignore[attr-defined]
    R.step_features(encoder, ["front"], {"front": frames}, {}, [], torch.device("cpu"), running)
    assert calls == [3, 5]


class ZeroTargetPolicy(HoldPolicy):
    """Absolute targets of 0 rad for every joint: far from home, so the env clips every step."""

    def act(self, obs: dict) -> torch.Tensor:
        return torch.zeros(len(obs["proprio"]), 8)


def test_clipped_actions_are_counted_per_episode() -> None:
    results, _ = R.run_episodes(ZeroTargetPolicy(), lambda x: torch.zeros(len(x), 4),
                                EnvConfig(image_size=32, max_steps=5), R.eval_episodes([(0.5, 0.0)]), n_envs=0,
                                progress=False)
    assert results[0].steps == 5 and results[0].clipped_steps == 5


H = 0.05  # the success height the classifier is given


@pytest.mark.parametrize(("lift", "grasped", "mode"), [
    ([0.0, 0.0, 0.001, 0.0], [0, 0, 0, 0], "missed_grasp"),  # never touched it
    ([0.0, 0.0, 0.0, 0.0], [0, 1, 1, 1], "missed_grasp"),  # closed on it but never lifted it
    ([0.0, 0.008, 0.03, 0.02], [0, 0, 0, 0], "missed_grasp"),  # knocked it up without holding it
    ([0.0, 0.02, 0.04, 0.002], [0, 1, 1, 0], "dropped"),  # held at 4 cm, back on the table
    ([0.0, 0.02, 0.04, 0.0], [0, 1, 1, 1], "dropped"),  # put back down while holding it
    ([0.0, 0.02, 0.03, 0.03], [0, 1, 1, 1], "lifted_too_little"),
    ([0.0, 0.02, 0.03, 0.03], [0, 1, 1, 0], "lifted_too_little"),  # still up, on one pad, at the end
    ([0.0, 0.02, 0.06, 0.06], [0, 1, 0, 0], "timeout"),  # up at the success height but never a success
])
def test_failure_modes_of_synthetic_traces(lift: list[float], grasped: list[int], mode: str) -> None:
    """Each failure mode from a per-step (lift, grasped) trace; a success has none."""
    assert R.classify_failure(lift, grasped, False, H) == mode
    assert R.classify_failure(lift, grasped, True, H) is None
    assert mode in R.FAILURE_MODES


def test_failure_classifier_refuses_bad_traces() -> None:
    with pytest.raises(ValueError, match="equal-length non-empty"):
        R.classify_failure([0.0, 0.1], [True], False, H)
    with pytest.raises(ValueError, match="equal-length non-empty"):
        R.classify_failure([], [], False, H)


def test_slot_info_reads_both_vector_info_layouts() -> None:
    """A dict-valued info key per slot: from the sequential envs' stacked objects and from gymnasium's async layout
    (a dict of per-key arrays with masks), where a slot without the key gives None."""
    from gymnasium.vector.vector_env import VectorEnv

    from s2robot.sim.rollout import _stack, slot_info

    timing = {"steps": 5, "missed_deadlines": 1}
    stacked = _stack([{"timing": {"steps": 1}}, {"timing": timing}])
    assert slot_info(stacked, "timing", 1) == timing

    class Three(VectorEnv):
        num_envs = 3

    async_info = Three()._add_info({}, {"timing": timing}, 1)
    assert slot_info(async_info, "timing", 1) == timing
    assert slot_info(async_info, "timing", 0) is None
