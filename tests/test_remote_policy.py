"""The remote policy server on loopback: the same actions as in process, an evaluation through it equal to one in
process (with its round trips), an unreachable, stalled or dead server stopping clearly, refused messages."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import tiny_checkpoint
from remote_helpers import Hold, server_of, serving

pytest.importorskip("zmq")

from s2robot.common.runlog import WandbConfig
from s2robot.policy.checkpoint import from_pretrained
from s2robot.policy.prefetch import PrefetchingPolicy
from s2robot.policy.remote import PolicyServerError, RemotePolicy, ServerRefused
from s2robot.policy.wire import VERSION, WireError, pack, unpack, zmq_module
from s2robot.sim import rollout as R
from s2robot.sim.rollout import step_features
from s2robot.workflows.evaluate import EvalConfig, encoder_for_checkpoint, evaluate

POSITIONS = [[0.5, 0.0], [0.55, 0.05]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy on a random micro encoder (32-px frames), trained for 4 steps on synthetic demos."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), max_steps=4, steps=4)


def run(checkpoint: Path, out: Path, **kw: Any) -> dict[str, Any]:
    return evaluate(EvalConfig(checkpoint=str(checkpoint), out=str(out), wandb=WandbConfig(mode="disabled"),
                               progress=False, n_envs=0, videos=0, repeats=1, positions=POSITIONS, device="cpu", **kw))


@pytest.fixture(scope="module")
def in_process(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run(checkpoint, tmp_path_factory.mktemp("in_process"))


def without_round_trips(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "round_trip"} for e in report["episodes_detail"]]


def observations(steps: int, batch: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random frames (B, 32, 32, 3) and proprio (B, 8); slot 1's episode ends after 6 steps, slot 2's after 11."""
    rng = np.random.default_rng(seed)
    ends = np.array([steps, 6, 11])[:batch]
    return [{"front": rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8),
             "proprio": rng.normal(size=(batch, 8)).astype(np.float32), "running": t < ends} for t in range(steps)]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_the_same_observations_give_bit_equal_actions(checkpoint: Path, prefetch: int) -> None:
    """Steps through the server (frames relayed, slots ending mid-wave, background inference dropping stale actions)
    give exactly the actions of the policy and encoder in process."""
    policy, parts = from_pretrained(checkpoint, "cpu")
    encoder = encoder_for_checkpoint(parts["encoder"])
    local = PrefetchingPolicy(policy, prefetch) if prefetch else policy
    with serving(server_of(checkpoint)) as address:
        remote = RemotePolicy(address, policy, encoder.fingerprint, prefetch, timeout_s=60)
        for episode in range(2):
            local.reset(3)
            remote.reset(3)
            for obs in observations(18, 3, seed=episode):
                here = step_features(encoder, ["front"], obs, {}, [], torch.device("cpu"), obs["running"])
                there = step_features(remote.relay, ["front"], obs, {}, [], torch.device("cpu"), obs["running"])
                a = local.act({**here, "proprio": obs["proprio"]})
                b = remote.act({**there, "proprio": obs["proprio"]})
                assert torch.equal(a, b)
        assert len(remote.round_trips) == 18 and min(remote.round_trips) > 0
        if prefetch:
            assert remote.stats == local.stats and remote.stats["dropped"] > 0
        remote.close()


def test_an_evaluation_through_the_server_equals_one_in_process(checkpoint: Path, in_process: dict[str, Any],
                                                                tmp_path: Path) -> None:
    """The same episodes and results; each episode records its round trip of every step, results.json their
    p50/p99 over all steps, and the label names the server's encoder."""
    with serving(server_of(checkpoint)) as address:
        report = run(checkpoint, tmp_path, server=address, server_timeout=60)
    assert without_round_trips(report) == without_round_trips(in_process)
    assert report["label"] == in_process["label"] and report["success_rate"] == in_process["success_rate"]
    saved = json.loads((tmp_path / "results.json").read_text())
    trips = [e["round_trip"] for e in saved["episodes_detail"]]
    assert [t["steps"] for t in trips] == [e["steps"] for e in saved["episodes_detail"]]
    assert all(len(t["ms"]) == t["steps"] and t["p50_ms"] <= t["p99_ms"] <= t["max_ms"] for t in trips)
    assert saved["round_trip"]["steps"] == sum(t["steps"] for t in trips) and saved["round_trip"]["p50_ms"] > 0
    assert "round_trip" not in in_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_named_within_the_timeout(checkpoint: Path, tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(PolicyServerError, match=rf"server_unreachable: no policy server answered at {address} within "
                                                r"0.5 s\. Start one .*scripts/serve_policy.py") as err:
        run(checkpoint, tmp_path, server=address, server_timeout=0.5)
    assert err.value.reason == "server_unreachable" and time.monotonic() - t0 < 60
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("die", [False, True])
def test_a_stalled_or_dead_server_stops_the_evaluation_and_loses_nothing(
        checkpoint: Path, in_process: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        die: bool) -> None:
    """No reply to step 2 of the second episode: the evaluation stops with ``server_timeout``, its envs closed (on
    the arm that stops the arm), the finished episode kept; the same command resumes once a server answers again,
    and the results equal an in-process run's."""
    closes: list[float] = []
    real_close = R._SequentialEnvs.close
    monkeypatch.setattr(R._SequentialEnvs, "close", lambda self: closes.append(time.monotonic()) or real_close(self))
    server = server_of(checkpoint)
    hold = Hold(server, at=(1, 2), die=die)
    with serving(server) as address:
        with pytest.raises(PolicyServerError, match=rf"server_timeout: the policy server at {address} sent no reply "
                                                    r"to step 2 of episode 1 within 3 s") as err:
            run(checkpoint, tmp_path, server=address, server_timeout=3.0)  # steps take ~10 ms, the held one forever
        assert err.value.reason == "server_timeout" and hold.held.is_set()
        hold.release.set()
    assert closes, "the envs were not closed"
    parts = [json.loads(line) for p in (tmp_path / ".parts").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert [len(p["results"]) for p in parts[1:]] == [1]  # the first episode was kept
    assert not (tmp_path / "results.json").exists()
    with serving(server_of(checkpoint)) as again:  # a server answers again (another port: the same results)
        report = run(checkpoint, tmp_path, server=again, server_timeout=60)
    assert report["episodes_run"] == 1 and without_round_trips(report) == without_round_trips(in_process)


def test_another_checkpoint_and_bad_messages_are_refused(checkpoint: Path) -> None:
    """Other weights at hello; another protocol version, a wrong frame shape, steps out of order and a replaced
    session at act: each an error reply naming the problem, and the server goes on serving."""
    policy, parts = from_pretrained(checkpoint, "cpu")
    fingerprint = encoder_for_checkpoint(parts["encoder"]).fingerprint
    server = server_of(checkpoint)
    with serving(server) as address:
        other = from_pretrained(checkpoint, "cpu")[0]
        with torch.no_grad():
            next(other.parameters()).add_(1.0)
        with pytest.raises(ServerRefused, match="Start the server with the checkpoint"):
            RemotePolicy(address, other, fingerprint, timeout_s=60)
        remote = RemotePolicy(address, policy, fingerprint, timeout_s=60)

    def act(step: int, frame: int = 32, session: str = remote.session, version: int = VERSION) -> str:
        frames = pack("act", {"session": session, "episode": 0, "step": step, "batch": 1},
                      {"proprio": np.zeros((1, 8), np.float32), "running": np.ones(1, bool),
                       "frames_front": np.zeros((1, frame, frame, 3), np.uint8)})
        header = json.loads(frames[0])
        frames[0] = json.dumps({**header, "version": version}).encode()
        reply, arrays = unpack(server.handle(frames))
        return reply.get("message", "") if reply["type"] == "error" else f"action {arrays['action'].shape}"

    assert act(0) == "action (1, 8)" and act(1) == "action (1, 8)"
    assert "version 99, this side speaks version 1: install the same s2robot version" in act(2, version=99)
    assert "'frames_front' must be uint8 of shape (1, 32, 32, 3), got uint8 (1, 16, 16, 3)" in act(2, frame=16)
    assert "steps must arrive in order" in act(5)
    assert "another client connected since" in act(2, session="someone else")
    assert act(2) == "action (1, 8)"  # still serving this session
    with pytest.raises(WireError, match="not an s2robot-policy message"):
        unpack([b"\x80pickle"])
    with pytest.raises(WireError, match=r"needs 32 bytes, its buffer has 4"):
        unpack([pack("x", arrays={"a": np.zeros((1, 8), np.float32)})[0], b"abcd"])


def test_configs_and_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"server must be the policy server's address, tcp://<host>:<port>"):
        EvalConfig(server="tcp://*:5555")
    with pytest.raises(ValueError, match="server_timeout must be a finite time > 0"):
        EvalConfig(server="tcp://gpu:5555", server_timeout=0)
    monkeypatch.setitem(sys.modules, "zmq", None)
    with pytest.raises(ImportError, match=r"pip install 's2robot\[remote\]'"):
        zmq_module()
