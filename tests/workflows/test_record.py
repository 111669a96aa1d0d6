"""Recording: expert demos into a store, worker-count independence, refusal/resume, SIGKILL + resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from s2robot.data.store import EpisodeStore
from s2robot.sim.env import EnvConfig
from s2robot.workflows.record import RecordConfig, record_demos

ROOT = Path(__file__).resolve().parents[2]


def cfg(tmp_path: Path, **kw: object) -> RecordConfig:
    env = EnvConfig(image_size=32, max_steps=40)
    return RecordConfig(**{"env": env, "out": str(tmp_path / "d.zarr"), "n_episodes": 2, "workers": 1, **kw})


class RandomPolicy:
    """A stand-in controller: any factory(env, seed) -> policy(obs, info) plugs into the recorder."""

    def __call__(self, env: object, seed: int):
        rng = np.random.default_rng(seed)
        return lambda obs, info: rng.uniform(-0.05, 0.05, 8).astype(np.float32)


def test_expert_demos_land_in_the_store(tmp_path: Path) -> None:
    path = record_demos(cfg(tmp_path), progress=False)
    store = EpisodeStore.open(path)
    assert store.n_episodes == 2 and set(store.keys) == {"rgb_front", "proprio", "cube_pos", "action",
                                                         "action_executed", "target", "target_executed"}
    ep = store.get_episode(0)
    assert ep["rgb_front"].shape[1:] == (32, 32, 3) and ep["action"].shape[1] == 8
    info = store.episode_info(1)
    assert info["success"] and info["seed"] == 1 and info["length"] == len(store.get_episode(1)["action"])
    assert [a["seed"] for a in store.attrs["attempts"]] == [0, 1]
    assert store.attrs["image_size"] == 32 and store.attrs["recorder"]["policy"] == "scripted expert"


def test_any_policy_plugs_in_and_failures_are_listed(tmp_path: Path) -> None:
    c = cfg(tmp_path, keep_failures=True, n_episodes=2)
    store = EpisodeStore.open(record_demos(c, factory=RandomPolicy(), progress=False))
    assert store.n_episodes == 2 and not any(store.episode_info(i)["success"] for i in range(2))
    x = cfg(tmp_path, out=str(tmp_path / "x.zarr"), max_attempts=3)
    with pytest.raises(RuntimeError, match="gave up after 3 episodes"):
        record_demos(x, factory=RandomPolicy(), progress=False)
    assert len(EpisodeStore.open(tmp_path / "x.zarr").attrs["attempts"]) == 3  # tried seeds are kept


def test_worker_count_does_not_change_the_store(tmp_path: Path) -> None:
    one = record_demos(cfg(tmp_path, out=str(tmp_path / "one.zarr"), n_episodes=3), progress=False)
    two = record_demos(cfg(tmp_path, out=str(tmp_path / "two.zarr"), n_episodes=3, workers=2), progress=False)
    assert EpisodeStore.open(one).fingerprint == EpisodeStore.open(two).fingerprint


def test_refuses_overwrite_and_resumes(tmp_path: Path) -> None:
    record_demos(cfg(tmp_path, n_episodes=1), progress=False)
    with pytest.raises(FileExistsError, match="resume=true"):
        record_demos(cfg(tmp_path), progress=False)
    with pytest.raises(ValueError, match="cannot resume"):
        record_demos(cfg(tmp_path, resume=True, env=EnvConfig(image_size=48)), progress=False)
    for changed, match in [({"noise_std": 0.01}, r"recorder.noise_std \(0.0 → 0.01\)"),
                           ({"seed": 7}, r"recorder.first_seed \(0 → 7\)"),
                           ({"keep_failures": True}, "recorder.keep_failures")]:  # one store, one setting
        with pytest.raises(ValueError, match=f"cannot resume .*{match}"):
            record_demos(cfg(tmp_path, resume=True, **changed), progress=False)
    assert EpisodeStore.open(tmp_path / "d.zarr").n_episodes == 1
    store = EpisodeStore.open(record_demos(cfg(tmp_path, n_episodes=3, resume=True), progress=False))
    assert store.n_episodes == 3 and [store.episode_info(i)["seed"] for i in range(3)] == [0, 1, 2]
    full = record_demos(cfg(tmp_path, out=str(tmp_path / "f.zarr"), n_episodes=3), progress=False)
    assert store.fingerprint == EpisodeStore.open(full).fingerprint


def test_sigkill_mid_recording_then_resume_completes(tmp_path: Path) -> None:
    """Kill the recording script while it records; earlier episodes survive and resume finishes the job."""
    out = tmp_path / "k.zarr"
    cmd = [sys.executable, str(ROOT / "scripts/record_demos.py"), f"out={out}", "n_episodes=4", "workers=1",
           "env.image_size=32", "env.max_steps=40"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a half-written episode may or may not be there to drop
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                if EpisodeStore.open(out).n_episodes >= 1:
                    break
            except (FileNotFoundError, ValueError):
                continue
        time.sleep(0.3)  # land somewhere inside a later episode
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        survived = EpisodeStore.open(out)
    assert 1 <= survived.n_episodes < 4
    first = survived.get_episode(0)
    done = subprocess.run([*cmd, "resume=true"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    store = EpisodeStore.open(out)
    assert store.n_episodes == 4 and np.array_equal(store.get_episode(0)["action"], first["action"])
    assert [store.episode_info(i)["seed"] for i in range(4)] == [0, 1, 2, 3]


def test_overwrite_replaces_only_a_demo_store(tmp_path: Path) -> None:
    """overwrite=true replaces a demo store, never a folder of notes or a feature cache (not any directory at
    out=)."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"not an s2robot EpisodeStore.*Nothing was deleted"):
        record_demos(cfg(tmp_path, out=str(notes), overwrite=True), progress=False)
    assert (notes / "todo.txt").read_text() == "keep me"
    cache = EpisodeStore.create(tmp_path / "cache.zarr", attrs={"kind": "s2robot.FeatureCache"})
    with pytest.raises(FileExistsError, match=r"it is a s2robot\.FeatureCache, not a demo store"):
        record_demos(cfg(tmp_path, out=str(cache.path), overwrite=True), progress=False)
    assert EpisodeStore.open(cache.path).attrs["kind"] == "s2robot.FeatureCache"
    record_demos(cfg(tmp_path, n_episodes=1), progress=False)
    again = record_demos(cfg(tmp_path, n_episodes=1, overwrite=True), progress=False)
    assert EpisodeStore.open(again).n_episodes == 1


@pytest.mark.parametrize("bad,match", [({"n_episodes": 0}, "n_episodes"), ({"n_episodes": -3}, "n_episodes"),
                                       ({"workers": -2}, "workers"), ({"noise_std": -0.1}, "noise_std"),
                                       ({"noise_std": float("nan")}, "noise_std"),
                                       ({"max_attempts": 1, "n_episodes": 2}, "max_attempts"),
                                       ({"resume": True, "overwrite": True}, "contradict"),
                                       ({"expert_pace": 0.0}, "expert_pace must be in"),
                                       ({"expert_pace": float("nan")}, "expert_pace must be in"),
                                       ({"expert_pace": 0.6, "controller": "keyboard"}, "paces the simulated env")])
def test_config_refuses_bad_values(tmp_path: Path, bad: dict, match: str) -> None:
    """Bad values are refused when the config is made, naming the value, not accepted silently."""
    with pytest.raises(ValueError, match=match):
        cfg(tmp_path, **bad)


class Killed(BaseException):
    """Stands in for SIGKILL right after a commit (a BaseException: nothing catches it on the way out)."""


def test_kill_right_after_a_commit_does_not_record_its_seed_again(tmp_path: Path, monkeypatch) -> None:
    """The attempt list is committed with the episode: a kill just after the commit cannot leave an episode whose
    seed resume=true records a second time (no duplicate episodes)."""
    commit = EpisodeStore._commit

    def commit_then_die(self, entries, attrs=None):
        commit(self, entries, attrs)
        if self.n_episodes == 2:
            raise Killed

    monkeypatch.setattr(EpisodeStore, "_commit", commit_then_die)
    with pytest.raises(Killed):
        record_demos(cfg(tmp_path, n_episodes=3), progress=False)
    monkeypatch.setattr(EpisodeStore, "_commit", commit)
    store = EpisodeStore.open(record_demos(cfg(tmp_path, n_episodes=3, resume=True), progress=False))
    assert [store.episode_info(i)["seed"] for i in range(3)] == [0, 1, 2]
    assert [a["seed"] for a in store.attrs["attempts"]] == [0, 1, 2]


def test_noise_injection_stores_label_and_executed_actions_in_both_spaces(tmp_path: Path) -> None:
    """DART: the label is the expert's clean correction, the executed action is label + noise; both are stored, as
    deltas and as absolute targets, and each target is the commanded position the delta leads to."""
    store = EpisodeStore.open(record_demos(cfg(tmp_path, n_episodes=1, noise_std=0.02), progress=False))
    ep = store.get_episode(0)
    noise = ep["action_executed"] - ep["action"]
    assert np.abs(noise[:, :7]).mean() > 0.005 and np.array_equal(noise[:, 7], np.zeros(len(noise)))
    np.testing.assert_allclose(ep["target_executed"] - ep["target"], noise, atol=1e-6)
    # the next step's commanded position (target - delta) is where the executed step left it
    np.testing.assert_allclose((ep["target"] - ep["action"])[1:, :7], ep["target_executed"][:-1, :7], atol=1e-5)
    np.testing.assert_allclose(ep["cube_pos"][0, :2], store.episode_info(0)["cube_xy"], atol=1e-6)


def test_post_success_tail_keeps_lifting_and_holding(tmp_path: Path) -> None:
    """With tail_steps=k the episode goes on k steps past its first success, the cube still held and higher."""
    plain = EpisodeStore.open(record_demos(cfg(tmp_path, n_episodes=1, tail_steps=0), progress=False))
    tail = EpisodeStore.open(record_demos(cfg(tmp_path, out=str(tmp_path / "t.zarr"), n_episodes=1, tail_steps=6),
                                          progress=False))
    assert tail.episode_lengths[0] == plain.episode_lengths[0] + 1 + 6
    a, b = plain.get_episode(0), tail.get_episode(0)
    n = plain.episode_lengths[0]
    assert np.array_equal(a["action"], b["action"][:n])  # the same episode up to the success
    lift = b["cube_pos"][:, 2] - b["cube_pos"][0, 2]
    assert lift[n:].min() >= 0.05 and lift[-1] > lift[n]  # held above the success height, still rising
    with pytest.raises(ValueError, match=r"recorder.tail_steps \(6 → 10\)"):
        record_demos(cfg(tmp_path, out=str(tmp_path / "t.zarr"), n_episodes=2, resume=True), progress=False)


def test_a_slower_expert_picks_in_more_steps_and_its_pace_is_kept(tmp_path: Path) -> None:
    """expert_pace=0.6: the same seed still lifts the cube, in more control steps; the store says at which pace, and
    resuming it at another pace is refused."""
    env = EnvConfig(image_size=32, max_steps=90)
    plain = EpisodeStore.open(record_demos(cfg(tmp_path, n_episodes=1, tail_steps=0, env=env), progress=False))
    slow_cfg = cfg(tmp_path, out=str(tmp_path / "s.zarr"), n_episodes=1, tail_steps=0, env=env, expert_pace=0.6)
    slow = EpisodeStore.open(record_demos(slow_cfg, progress=False))
    assert slow.episode_info(0)["success"] and slow.episode_lengths[0] >= 1.3 * plain.episode_lengths[0]
    assert slow.attrs["recorder"]["expert_pace"] == 0.6 and plain.attrs["recorder"]["expert_pace"] == 1.0
    with pytest.raises(ValueError, match=r"recorder.expert_pace \(0.6 → 1.0\)"):
        record_demos(cfg(tmp_path, out=str(tmp_path / "s.zarr"), n_episodes=2, tail_steps=0, env=env, resume=True),
                     progress=False)


def test_old_stores_and_absolute_recording_are_refused_clearly(tmp_path: Path) -> None:
    """A store recorded before targets were stored cannot take new episodes; an env in absolute mode cannot be
    driven by the (delta) scripted expert; an old store's missing tail_steps means no tail."""
    from s2robot.workflows.record import _changed_settings

    old = tmp_path / "old.zarr"
    EpisodeStore.create(old).add_episode({"proprio": np.zeros((2, 8), np.float32),
                                          "action": np.zeros((2, 8), np.float32)})
    with pytest.raises(ValueError, match="recorded before s2robot stored absolute targets"):
        record_demos(cfg(tmp_path, out=str(old), resume=True), progress=False)
    with pytest.raises(ValueError, match=r"leave env\.action_mode=delta for recording"):
        RecordConfig(env=EnvConfig(action_mode="absolute"))
    recorded = {"env": {"image_size": 32, "max_steps": 40}, "cameras": ["front"], "image_size": 32,
                "recorder": {"policy": "scripted expert", "noise_std": 0.0}}  # older: no tail_steps, no action_mode
    wanted = {"env": vars(EnvConfig(image_size=32, max_steps=40)),
              "cameras": ["front"], "image_size": 32,
              "recorder": {"policy": "scripted expert", "noise_std": 0.0, "tail_steps": 10, "keep_failures": False,
                           "first_seed": 0, "variation": "none", "expert_pace": 1.0}}
    assert _changed_settings(recorded, wanted) == ["recorder.tail_steps (0 → 10)"]  # no pace: the expert's own


def test_a_varied_recording_keeps_each_episodes_scene(tmp_path: Path) -> None:
    """variation=standard: the store's attrs name it, each episode's info holds the scene parameters it drew (the
    same ones a re-recording draws), and a resume with another variation is refused."""
    path = record_demos(cfg(tmp_path, variation="standard", n_episodes=2), progress=False)
    store = EpisodeStore.open(path)
    assert store.attrs["recorder"]["variation"] == "standard"
    scenes = [store.episode_info(i)["variation"] for i in range(2)]
    assert all(isinstance(s, dict) and s for s in scenes) and scenes[0] != scenes[1]
    again = EpisodeStore.open(record_demos(cfg(tmp_path, out=str(tmp_path / "b.zarr"), variation="standard"),
                                           progress=False))
    assert [again.episode_info(i)["variation"] for i in range(2)] == scenes and again.fingerprint == store.fingerprint
    clean = EpisodeStore.open(record_demos(cfg(tmp_path, out=str(tmp_path / "c.zarr")), progress=False))
    assert "variation" not in clean.episode_info(0) and clean.attrs["recorder"]["variation"] == "none"
    assert not np.array_equal(clean.get_episode(0)["rgb_front"], store.get_episode(0)["rgb_front"])
    with pytest.raises(ValueError, match=r"recorder.variation \(standard → none\)"):
        record_demos(cfg(tmp_path, n_episodes=3, resume=True), progress=False)


@pytest.mark.parametrize("spec,match", [("lights:high", "unknown variation factor 'lights'.*light_intensity"),
                                        ("light_intensity:max", r"unknown level 'max'.*\['low', 'high'\]"),
                                        ("random", "preset.*standard")])
def test_a_bad_variation_is_refused_with_the_valid_list(tmp_path: Path, spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cfg(tmp_path, variation=spec)
    with pytest.raises(ValueError, match="scene variation is drawn in simulation"):
        RecordConfig(env=EnvConfig(id="s2robot/FrankaReal-v0"), variation="standard")
