"""Feature cache: values, no-op re-runs, stale detection, resume after interruption, the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_demos

from s2robot.data.episode_groups import episode_groups, read_group
from s2robot.data.features import (
    build_feature_cache,
    default_cache_path,
    open_feature_cache,
)
from s2robot.data.store import EpisodeStore
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder

ROOT = Path(__file__).resolve().parents[2]


def append_episode(path: Path, n: int = 3) -> None:
    rng = np.random.default_rng(99)
    EpisodeStore.open(path, mode="a").add_episode(
        {"rgb_front": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
         "proprio": np.zeros((n, 8), np.float32), "action": np.zeros((n, 8), np.float32),
         "target": np.zeros((n, 8), np.float32)})


class Counting(FrozenS2Encoder):
    """A micro encoder that counts frames and can fail after a number of calls."""

    def __init__(self, seed: int = 0, fail_after: int | None = None) -> None:
        super().__init__(EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32, 64], seed=seed,
                                       dtype="float32"))
        self.frames, self.calls, self.fail_after = 0, 0, fail_after

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.frames += len(frames)
        return super().forward(frames)


def test_cache_holds_encoder_features_and_copies_the_rest(tmp_path: Path) -> None:
    demos = make_demos(tmp_path / "d.zarr")
    enc = Counting()
    path = build_feature_cache(demos, enc, batch_size=4, progress=False)
    assert path == default_cache_path(demos, enc.fingerprint)
    assert path == tmp_path / "features" / f"d-{enc.fingerprint}.zarr"
    cache, src = open_feature_cache(path, enc.fingerprint), EpisodeStore.open(demos)
    assert np.array_equal(cache.episode_ends, src.episode_ends)
    assert set(cache.keys) == {"feat_front", "proprio", "action", "target"}
    for i in range(src.n_episodes):
        got, ep = cache.get_episode(i), src.get_episode(i)
        assert got["feat_front"].dtype == np.float16 and got["feat_front"].shape == (len(ep["action"]), 64)
        expect = enc(ep["rgb_front"]).numpy()
        assert np.allclose(got["feat_front"], expect, atol=2e-3, rtol=2e-3)
        assert np.array_equal(got["action"], ep["action"]) and np.array_equal(got["proprio"], ep["proprio"])
        assert cache.episode_info(i)["seed"] == i
    assert cache.attrs["weights_random"] and cache.attrs["source"]["fingerprint"] == src.fingerprint


def test_same_key_is_a_noop_and_changes_are_detected(tmp_path: Path) -> None:
    demos = make_demos(tmp_path / "d.zarr")
    first = build_feature_cache(demos, Counting(), progress=False)
    again = Counting()
    assert build_feature_cache(demos, again, progress=False) == first and again.frames == 0
    other = Counting(seed=1)  # another encoder: another cache file, never the old one
    assert build_feature_cache(demos, other, progress=False) != first and other.frames == 16
    explicit = build_feature_cache(demos, Counting(), out=tmp_path / "mine.zarr", progress=False)
    with pytest.warns(UserWarning, match="stale: the encoder changed"):
        build_feature_cache(demos, Counting(seed=1), out=explicit, progress=False)
    append_episode(demos)  # the demo store changed
    enc = Counting()
    with pytest.warns(UserWarning, match="stale: the demo store changed"):
        build_feature_cache(demos, enc, progress=False)
    assert enc.frames == 19 and EpisodeStore.open(first).n_episodes == 4


def test_interrupted_build_resumes(tmp_path: Path) -> None:
    demos = make_demos(tmp_path / "d.zarr", lengths=(5, 7, 4, 6))
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(demos, Counting(fail_after=3), batch_size=5, progress=False)
    path = default_cache_path(demos, Counting().fingerprint)
    partial = EpisodeStore.open(path).n_episodes
    assert 0 < partial < 4
    enc = Counting()
    build_feature_cache(demos, enc, batch_size=5, progress=False)
    assert enc.frames == int(EpisodeStore.open(demos).episode_lengths[partial:].sum())
    full = build_feature_cache(demos, Counting(), out=tmp_path / "full.zarr", progress=False)
    a, b = EpisodeStore.open(path), EpisodeStore.open(full)
    assert np.array_equal(a.get_steps("feat_front", 0, a.n_steps), b.get_steps("feat_front", 0, b.n_steps))


def test_errors(tmp_path: Path) -> None:
    demos = make_demos(tmp_path / "d.zarr")
    path = build_feature_cache(demos, Counting(), progress=False)
    with pytest.raises(ValueError, match="made by encoder"):
        open_feature_cache(path, "0" * 16)
    with pytest.raises(ValueError, match="not a feature cache"):
        open_feature_cache(demos)
    no_cams = EpisodeStore.create(tmp_path / "n.zarr")
    no_cams.add_episode({"action": np.zeros((2, 8), np.float32)})
    with pytest.raises(ValueError, match="no camera frames"):
        build_feature_cache(tmp_path / "n.zarr", Counting(), progress=False)


def test_script_builds_cache_and_rejects_typos(tmp_path: Path) -> None:
    demos = make_demos(tmp_path / "d.zarr", lengths=(3, 2))
    script = str(ROOT / "scripts/cache_features.py")
    cmd = [sys.executable, script, f"demos={demos}", "encoder=micro_s2_random"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "RANDOM weights" in done.stdout and len(list((tmp_path / "features").iterdir())) == 1
    views = subprocess.run([*cmd, "views.n=1"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert views.returncode == 0, views.stderr
    assert "1 shifted view(s) of every frame (≤ 8 px)" in views.stdout
    assert len(list((tmp_path / "features").glob("*-views1s8r0.zarr"))) == 1
    bad = subprocess.run([*cmd, "encoder.redout=mean"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "redout" in bad.stderr


def test_episode_groups_cover_every_episode_once() -> None:
    """Groups are consecutive, hold at least min_steps steps (but the last), and start where asked."""
    ends = np.cumsum([3, 5, 2, 7, 1, 4])
    assert episode_groups(ends, 0, 6) == [range(0, 2), range(2, 4), range(4, 6)]
    assert episode_groups(ends, 2, 100) == [range(2, 6)]
    assert episode_groups(ends, 0, 1) == [range(i, i + 1) for i in range(6)]
    assert episode_groups(ends, 6, 4) == []


def test_group_reads_equal_episode_reads(tmp_path: Path) -> None:
    """One slice per group splits back into exactly the per-episode arrays, and any grouping caches the same."""
    demos = make_demos(tmp_path / "d.zarr")
    store = EpisodeStore.open(demos)
    for group in episode_groups(store.episode_ends, 1, 5):
        for i, ep in read_group(store, group):
            expect = store.get_episode(i)
            assert set(ep) == set(expect) and all(np.array_equal(ep[k], expect[k]) for k in ep)
    enc = FrozenS2Encoder(EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32, 64], dtype="float32"))
    small = EpisodeStore.open(build_feature_cache(demos, enc, out=tmp_path / "a.zarr", batch_size=2, progress=False))
    large = EpisodeStore.open(build_feature_cache(demos, enc, out=tmp_path / "b.zarr", batch_size=999,
                                                  progress=False))
    assert np.array_equal(small.episode_ends, large.episode_ends)
    for i in range(store.n_episodes):
        a, b = small.get_episode(i), large.get_episode(i)
        assert np.array_equal(a["action"], b["action"])
        assert np.allclose(a["feat_front"], b["feat_front"], atol=2e-3)


def test_cache_never_deletes_what_is_not_a_cache(tmp_path: Path) -> None:
    """out= pointing at the demo store itself or at a folder of notes is refused with nothing deleted (not taken
    for an unreadable cache and removed with "unreadable ... rebuilding it")."""
    demos = make_demos(tmp_path / "d.zarr")
    before = EpisodeStore.open(demos).fingerprint
    enc = Counting()
    with pytest.raises(FileExistsError, match=r"it is a demo store, not a s2robot\.FeatureCache"), \
            pytest.warns(UserWarning, match="stale"):
        build_feature_cache(demos, enc, out=demos, progress=False)
    assert EpisodeStore.open(demos).fingerprint == before
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not an s2robot EpisodeStore"), pytest.warns(UserWarning):
        build_feature_cache(demos, enc, out=notes, progress=False)
    assert (notes / "a.txt").read_text() == "keep"


def test_oracle_cache_holds_the_privileged_state_and_says_so(tmp_path: Path) -> None:
    """encoder=oracle: the cube position (+ a per-episode offset with noise) and the gripper opening, from a store
    with no camera at all; the cache is marked privileged."""
    from s2robot.vision.encoder import EncoderConfig, build_encoder

    rng = np.random.default_rng(0)
    store = EpisodeStore.create(tmp_path / "d.zarr")
    for seed, n in ((7, 5), (8, 4)):
        store.add_episode({"proprio": rng.normal(size=(n, 8)).astype(np.float32),
                           "cube_pos": rng.normal(size=(n, 3)).astype(np.float32),
                           "action": rng.normal(size=(n, 8)).astype(np.float32)}, info={"seed": seed})
    exact = build_feature_cache(tmp_path / "d.zarr", build_encoder(EncoderConfig.from_name("oracle")),
                                out=tmp_path / "o.zarr", progress=False)
    cache = EpisodeStore.open(exact)
    ep = cache.get_episode(1)
    np.testing.assert_allclose(ep["feat_oracle"], np.c_[ep["cube_pos"], ep["proprio"][:, 7]], atol=2e-3)  # float16
    assert cache.attrs["privileged"] is True and "PRIVILEGED" in cache.attrs["encoder"]["weights"]
    noisy = build_encoder(EncoderConfig.from_name("oracle_3cm"))
    cache = EpisodeStore.open(build_feature_cache(tmp_path / "d.zarr", noisy, out=tmp_path / "n.zarr",
                                                  progress=False))
    err = cache.get_episode(1)["feat_oracle"][:, :3] - ep["cube_pos"]
    np.testing.assert_allclose(err, np.broadcast_to(noisy.offset(8), err.shape), atol=2e-3)  # constant, seed 8's
    assert np.abs(noisy.offset(8)).max() > 0.003 and noisy.offset(8)[2] == 0
    with pytest.raises(ValueError, match="no 'cube_pos' key, which the oracle encoder reads"):
        build_feature_cache(make_demos(tmp_path / "old.zarr"), noisy, out=tmp_path / "x.zarr", progress=False)


def test_cls_cache_is_cut_from_a_cls_grid_cache_without_encoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """prepare_cache for a ``cls`` readout cuts the leading columns of a complete ``cls+grid`` cache of the same
    encoder and demos: the same features as encoding, no frame encoded; with no such cache it encodes."""
    from s2robot.data import features
    from s2robot.workflows import cache as cache_flow

    demos = str(make_demos(tmp_path / "d.zarr", lengths=(5, 7, 4, 6)))
    cfg = EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32, 64], dtype="float32")
    encoded = Counting()
    monkeypatch.setattr(features, "build_encoder", lambda c: encoded)  # counts the frames it encodes
    direct, fp = cache_flow.prepare_cache(demos, str(tmp_path / "direct.zarr"), cfg, batch_size=8, progress=False)
    assert encoded.frames == 22  # an explicit path: built by encoding (no superset at the default path)
    grid_cfg = EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32, 64], dtype="float32",
                             readout="cls+grid")
    monkeypatch.undo()
    cache_flow.prepare_cache(demos, None, grid_cfg, batch_size=8, progress=False)  # the superset, encoded
    counted = Counting()
    monkeypatch.setattr(features, "build_encoder", lambda c: counted)
    cut, fp_cut = cache_flow.prepare_cache(demos, None, cfg, batch_size=8, progress=True)
    assert counted.frames == 0 and fp_cut == fp and cut == default_cache_path(demos, fp) != direct
    assert "cut 64-D features of 4 episodes" in capsys.readouterr().out
    a, b = open_feature_cache(cut, fp), open_feature_cache(direct, fp)
    assert a.attrs["feature_dim"] == 64 and np.array_equal(a.episode_ends, b.episode_ends)
    assert np.allclose(a.get_steps("feat_front", 0, a.n_steps), b.get_steps("feat_front", 0, b.n_steps), atol=2e-3)
    assert np.array_equal(a.get_steps("action", 0, a.n_steps), b.get_steps("action", 0, b.n_steps))
    assert a.episode_info(2) == b.episode_info(2)


def test_a_cache_stopped_half_way_is_resumed_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_cache (what training calls) finishes a cache whose build was interrupted instead of training on the
    episodes it holds."""
    from s2robot.data import features
    from s2robot.workflows import cache as cache_flow

    demos = str(make_demos(tmp_path / "d.zarr", lengths=(5, 7, 4, 6)))
    cfg = EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32, 64], seed=0, dtype="float32")
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(demos, Counting(fail_after=1), batch_size=5, progress=False)
    path = default_cache_path(demos, Counting().fingerprint)
    assert 0 < EpisodeStore.open(path).n_episodes < 4
    monkeypatch.setattr(features, "build_encoder", lambda c: Counting())
    got, _ = cache_flow.prepare_cache(demos, None, cfg, batch_size=5, progress=False)
    assert got == path and EpisodeStore.open(path).n_episodes == 4


def test_the_cache_script_and_training_share_one_decision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``scripts/cache_features.py`` builds the cache training would read, at the same path; once current, neither
    builds an encoder again."""
    from helpers import micro_encoder_config

    from s2robot.data import features
    from s2robot.workflows.cache import FeatureCacheConfig, cache_features, prepare_cache

    demos = str(make_demos(tmp_path / "d.zarr"))
    path = cache_features(FeatureCacheConfig(encoder=micro_encoder_config(), demos=demos, batch_size=8), progress=False)
    monkeypatch.setattr(features, "build_encoder", lambda c: pytest.fail("a current cache was built again"))
    assert prepare_cache(demos, None, micro_encoder_config(), progress=False)[0] == path
    assert cache_features(FeatureCacheConfig(encoder=micro_encoder_config(), demos=demos), progress=False) == path
