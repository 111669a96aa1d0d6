"""The arm through a policy server: in the franky-sim rehearsal, the client/server episode's actions equal in-process
inference on the same observations, and a server that stops answering stops the arm with the finished episode
kept."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import make_demos, micro_encoder_config
from remote_helpers import Hold, server_of, serving

pytest.importorskip("zmq")
pytest.importorskip("franky")
pytest.importorskip("franky_sim")

from s2robot.common.runlog import WandbConfig
from s2robot.policy.checkpoint import from_pretrained
from s2robot.policy.configuration import PolicyConfig
from s2robot.policy.remote import FrameRelay, PolicyServerError, RemotePolicy
from s2robot.real.arm import FrankyArm
from s2robot.sim.env import ARM_ENV_ID, EnvConfig
from s2robot.sim.rollout import step_features
from s2robot.workflows.evaluate import EvalConfig, encoder_for_checkpoint, evaluate
from s2robot.workflows.train import TrainConfig, train

MAX_STEPS = 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy for the rehearsal arm (32-px frames), trained for 4 steps on synthetic demos."""
    tmp = tmp_path_factory.mktemp("ckpt")
    make_demos(tmp / "d.zarr", (12, 9, 14, 10), cubes=True)
    env = EnvConfig(id=ARM_ENV_ID, options={"host": "franky-sim"}, image_size=32, max_steps=MAX_STEPS)
    cfg = TrainConfig(name="arm", runs_dir=str(tmp / "runs"), encoder=micro_encoder_config(), demos=str(tmp / "d.zarr"),
                      policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, ff_mult=2), env=env, steps=4,
                      batch_size=8, progress=False, wandb=WandbConfig(mode="disabled"))
    return train(cfg)


def test_the_rehearsal_through_a_server(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Episode 1 runs through the server; episode 2's second step gets no reply: the evaluation stops with
    ``server_timeout``, the arm is stopped, episode 1 is kept. Episode 1's observations, replayed through the policy
    and encoder in process, give the actions the server sent, bit for bit."""
    steps: list[tuple[int, dict[str, Any], torch.Tensor]] = []  # (episode, obs, action) as the rollout saw them
    real_act = RemotePolicy.act

    def act(self: RemotePolicy, obs: dict[str, Any]) -> torch.Tensor:
        action = real_act(self, obs)
        copied = {k: v.clone() if isinstance(v, torch.Tensor) else np.array(v) for k, v in obs.items()}
        steps.append((self._episode, copied, action.clone()))
        return action

    stops: list[float] = []
    real_stop = FrankyArm.stop
    monkeypatch.setattr(RemotePolicy, "act", act)
    monkeypatch.setattr(FrankyArm, "stop", lambda self: stops.append(time.monotonic()) or real_stop(self))
    server = server_of(checkpoint)
    hold = Hold(server, at=(1, 1))
    with serving(server) as address:
        with pytest.raises(PolicyServerError, match=r"server_timeout: .* no reply to step 1 of episode 1") as err:
            evaluate(EvalConfig(checkpoint=str(checkpoint), out=str(tmp_path), positions=[[0.5, 0.0], [0.55, 0.1]],
                                repeats=1, n_envs=0, videos=0, max_steps=MAX_STEPS, device="cpu", progress=False,
                                wandb=WandbConfig(mode="disabled"), server=address, server_timeout=5.0))
        hold.release.set()
    assert err.value.reason == "server_timeout"
    assert [s for s in stops if s > hold.held_at], "the arm was not stopped after the server stopped answering"
    kept = [json.loads(line) for p in (tmp_path / ".parts").glob("*.jsonl") for line in p.read_text().splitlines()][1:]
    assert [[r["steps"] for r in wave["results"]] for wave in kept] == [[MAX_STEPS]]
    assert kept[0]["results"][0]["timing"]["steps"] == MAX_STEPS and kept[0]["results"][0]["round_trip"]["steps"] == 4

    policy, parts = from_pretrained(checkpoint, "cpu")
    encoder = encoder_for_checkpoint(parts["encoder"])
    policy.reset(1)
    first = [(obs, action) for episode, obs, action in steps if episode == 0]
    assert len(first) == MAX_STEPS
    for obs, action in first:
        running, frames = FrameRelay.split(obs["feat_front"], (32, 32, 3))
        feats = step_features(encoder, ["front"], {"front": frames}, {}, [], torch.device("cpu"), running)
        assert torch.equal(policy.act({**feats, "proprio": obs["proprio"]}), action)
