"""Evaluation rollouts: a dead env worker is reported with the episodes it ran, not a bare EOFError or a hang."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from s2robot.sim import rollout as R
from s2robot.sim.env import EnvConfig


class KillingPolicy(torch.nn.Module):
    """Zero actions; on its third step it SIGKILLs env worker 0 (as the hostile test did by hand)."""

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
