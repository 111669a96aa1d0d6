"""Shifted views: the shift itself, the offsets, the views store beside the cache, windows that read them, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import make_demos

from s2robot.data.dataset import WindowDataset
from s2robot.data.features import (
    build_feature_cache,
    default_cache_path,
    open_feature_cache,
    open_views_cache,
)
from s2robot.data.store import EpisodeStore
from s2robot.data.views import ViewsConfig, draw_views, shift_frames, view_offsets, views_cache_path
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder


def test_prepare_views_builds_once_and_needs_no_demos_when_complete(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from helpers import micro_encoder_config

    import s2robot.data.features as F
    import s2robot.workflows.cache as C

    demos = make_demos(tmp_path / "d.zarr")
    cfg, views = micro_encoder_config(), ViewsConfig(n=1, shift=2)
    cache, _ = C.prepare_cache(str(demos), None, cfg, progress=False)
    built = []
    real = F.build_encoder
    monkeypatch.setattr(F, "build_encoder", lambda c: built.append(c) or real(c))
    path = C.prepare_views(str(demos), cache, cfg, views, progress=False)
    assert path == views_cache_path(cache, views) and len(built) == 1
    assert C.prepare_views(str(demos), cache, cfg, views, progress=False) == path and len(built) == 1  # current
    shutil.rmtree(demos)
    assert C.prepare_views(str(demos), cache, cfg, views, progress=False) == path  # complete: the demos not needed
    with pytest.raises(FileNotFoundError, match="are encoded from its frames"):
        C.prepare_views(str(demos), cache, cfg, ViewsConfig(n=2, shift=2), progress=False)
    assert C.prepare_views(str(demos), cache, cfg, ViewsConfig(n=0), progress=False) is None


def micro() -> FrozenS2Encoder:
    return FrozenS2Encoder(EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32, 64], dtype="float32"))


def test_shift_moves_the_content_and_repeats_the_edges() -> None:
    frames = np.arange(2 * 4 * 5 * 1).reshape(2, 4, 5, 1)  # (T, H, W, C)
    assert np.array_equal(shift_frames(frames, 0, 0), frames)
    right = shift_frames(frames, 2, 0)  # content 2 px to the right, the first column repeated into the gap
    assert np.array_equal(right[:, :, 2:], frames[:, :, :3])
    assert np.array_equal(right[:, :, 0], frames[:, :, 0]) and np.array_equal(right[:, :, 1], frames[:, :, 0])
    up = shift_frames(frames, 0, -1)  # content 1 px up, the last row repeated
    assert np.array_equal(up[:, :3], frames[:, 1:]) and np.array_equal(up[:, 3], frames[:, 3])
    both = shift_frames(frames, -1, 1)
    assert both.shape == frames.shape and np.array_equal(both[:, 1:, :4], frames[:, :3, 1:])
    with pytest.raises(ValueError, match="does not fit"):
        shift_frames(frames, 5, 0)


def test_offsets_are_seeded_bounded_and_never_zero() -> None:
    cfg = ViewsConfig(n=4, shift=1, seed=3)
    offsets = np.stack([view_offsets(cfg, e) for e in range(50)])  # (50, 4, 2)
    assert np.abs(offsets).max() <= 1 and offsets.any(axis=2).all()  # never (0, 0), even with 8 choices
    assert np.array_equal(view_offsets(cfg, 7), view_offsets(ViewsConfig(n=4, shift=1, seed=3), 7))
    assert not np.array_equal(view_offsets(cfg, 7), view_offsets(cfg, 8))
    with pytest.raises(ValueError, match="n ≥ 0 and shift ≥ 1"):
        ViewsConfig(n=1, shift=0)
    with pytest.raises(ValueError, match="prob"):
        ViewsConfig(n=1, prob=1.5)


def test_views_store_holds_the_encoded_shifted_frames(tmp_path: Path) -> None:
    """Every view equals the encoder run on that episode's frames shifted by that view's offset; the plain cache
    is left as it is, and each store refuses to be read as the other."""
    demos = make_demos(tmp_path / "d.zarr", lengths=(5, 7, 4))
    enc, views = micro(), ViewsConfig(n=2, shift=3)
    plain = build_feature_cache(demos, enc, batch_size=4, progress=False)
    path = build_feature_cache(demos, enc, batch_size=4, progress=False, views=views)
    assert path == views_cache_path(default_cache_path(demos, enc.fingerprint), views) and path != plain
    src = EpisodeStore.open(demos)
    store = open_views_cache(path, enc.fingerprint, views, src.fingerprint, src.n_episodes)
    assert set(store.keys) == {"feat_front"}
    for i in range(src.n_episodes):
        got, frames = store.get_episode(i)["feat_front"], src.get_episode(i)["rgb_front"]  # (T, 2, F)
        assert got.shape == (len(frames), 2, enc.feature_dim)
        for k, (dx, dy) in enumerate(view_offsets(views, i)):
            expect = enc(shift_frames(frames, int(dx), int(dy))).numpy()
            assert np.allclose(got[:, k], expect, atol=2e-3, rtol=2e-3)
        assert not np.allclose(got[:, 0], enc(frames).numpy(), atol=2e-3)  # shifted, not the rendered frames
    with pytest.raises(ValueError, match="holds shifted views"):
        open_feature_cache(path)
    with pytest.raises(ValueError, match="not the complete set of shifted views"):
        open_views_cache(path, enc.fingerprint, ViewsConfig(n=2, shift=4), src.fingerprint, src.n_episodes)
    with pytest.raises(ValueError, match="not the complete set of shifted views"):
        open_views_cache(plain, enc.fingerprint, views, src.fingerprint, src.n_episodes)
    with pytest.warns(UserWarning, match="stale: the views config changed"):
        build_feature_cache(demos, enc, out=path, progress=False, views=ViewsConfig(n=1, shift=3))


def window_data(n_steps: int = 10, n_views: int = 3) -> tuple[dict, dict]:
    feats = np.zeros((n_steps, 4), np.float32)  # the rendered frames' features: 0
    views = np.stack([np.full((n_steps, 4), k + 1, np.float32) for k in range(n_views)], axis=1)  # view k: k + 1
    data = {"feat_front": feats, "proprio": np.zeros((n_steps, 2), np.float32),
            "action": np.zeros((n_steps, 2), np.float32)}
    return data, {"feat_front": views}


def test_draw_is_per_global_batch_so_ddp_shards_draw_what_one_process_does() -> None:
    cfg = ViewsConfig(n=3, prob=0.5)
    one = draw_views(cfg, 64, step=7, seed=1)  # (64,)
    assert np.array_equal(np.concatenate([draw_views(cfg, 64, 7, 1, rank, 4) for rank in range(4)]), one)
    assert set(np.unique(one)) == {-1, 0, 1, 2} and 0.3 < (one >= 0).mean() < 0.7
    assert not np.array_equal(one, draw_views(cfg, 64, step=8, seed=1))  # another step, another draw
    assert (draw_views(ViewsConfig(n=2, prob=1.0), 32, 0, 0) >= 0).all()
    assert (draw_views(ViewsConfig(n=2, prob=0.0), 32, 0, 0) == -1).all()


def test_windows_read_the_view_drawn_for_them() -> None:
    data, views = window_data(40)
    ends = np.array([20, 40])
    ds = WindowDataset(data, ends, t_obs=4, t_act=2, views=views)
    idx = np.arange(len(ds))
    assert not ds.get_batch(idx)["feat_front"].any()  # no draw (validation): the rendered frames only
    view = draw_views(ViewsConfig(n=3, prob=0.5), len(idx), step=0, seed=0)  # (40,)
    feats = ds.get_batch(idx, view)["feat_front"].numpy()  # (40, To=4, 4)
    assert np.array_equal(feats[:, :, 0], np.repeat(view[:, None] + 1, 4, axis=1))  # view k reads k + 1, -1 reads 0
    assert not ds.get_batch(idx)["feat_front"].any()  # the draw left the stored features as they were
    with pytest.raises(ValueError, match="view must be one of -1 … 2"):
        ds.get_batch(idx, np.full(len(idx), 3))
    with pytest.raises(ValueError, match="views of feat_front"):
        WindowDataset(data, ends, views={"feat_front": views["feat_front"][:, :, :3]})
    with pytest.raises(ValueError, match="that do not exist"):
        WindowDataset(data, ends, views={"feat_side": views["feat_front"]})
    two = {**data, "feat_side": data["feat_front"]}
    with pytest.raises(ValueError, match="same number of views"):
        WindowDataset(two, ends, views={"feat_front": views["feat_front"], "feat_side": views["feat_front"][:, :2]})


def paired_scenes(path: Path, demos: Path, seed: int = 5) -> Path:
    """The demos' episodes with other frames: what recording them again in varied scenes gives."""
    src, rng = EpisodeStore.open(demos), np.random.default_rng(seed)
    store = EpisodeStore.create(path, attrs={"env_id": "test"})
    for i in range(src.n_episodes):
        ep = src.get_episode(i)
        store.add_episode({**ep, "rgb_front": rng.integers(0, 256, ep["rgb_front"].shape, dtype=np.uint8)},
                          info=src.episode_info(i))
    return path


def test_scene_views_are_the_scene_stores_frames_of_the_same_episodes(tmp_path: Path) -> None:
    """With scenes=, view 0 of each episode is the encoder run on the scene store's frames of that episode (shift
    0: as recorded); the views are keyed by the scene store's content; a scene store of other episodes (other
    actions or another count) is refused naming the problem; shift=0 needs scenes and n=1."""
    demos = make_demos(tmp_path / "d.zarr", lengths=(5, 7, 4))
    scenes = paired_scenes(tmp_path / "d-scenes.zarr", demos)
    enc, views = micro(), ViewsConfig(n=1, shift=0, scenes=str(scenes))
    path = build_feature_cache(demos, enc, batch_size=4, progress=False, views=views)
    assert path.name.endswith("-views1s0r0-d-scenes.zarr")
    src, other = EpisodeStore.open(demos), EpisodeStore.open(scenes)
    store = open_views_cache(path, enc.fingerprint, views, src.fingerprint, src.n_episodes)
    assert store.attrs["views"]["scenes"] == other.fingerprint
    for i in range(src.n_episodes):
        got = store.get_episode(i)["feat_front"]  # (T, 1, F)
        assert np.allclose(got[:, 0], enc(other.get_episode(i)["rgb_front"]).numpy(), atol=2e-3, rtol=2e-3)
        assert not np.allclose(got[:, 0], enc(src.get_episode(i)["rgb_front"]).numpy(), atol=2e-3)
    shifted = ViewsConfig(n=2, shift=3, scenes=str(scenes))
    got = EpisodeStore.open(build_feature_cache(demos, enc, batch_size=4, progress=False, views=shifted))
    dx, dy = view_offsets(shifted, 1)[1]
    expect = enc(shift_frames(other.get_episode(1)["rgb_front"], int(dx), int(dy))).numpy()
    assert np.allclose(got.get_episode(1)["feat_front"][:, 1], expect, atol=2e-3, rtol=2e-3)

    wrong = make_demos(tmp_path / "other.zarr", lengths=(5, 7, 4), seed=9)  # same lengths, other actions
    with pytest.raises(ValueError, match=r"episode 0 of the scene store .* is not episode 0 of the demos"):
        build_feature_cache(demos, enc, out=tmp_path / "w.zarr", progress=False,
                            views=ViewsConfig(n=1, shift=0, scenes=str(wrong)))
    short = make_demos(tmp_path / "short.zarr", lengths=(5, 7))
    with pytest.raises(ValueError, match=r"holds 2 episodes, the demos .* 3"):
        build_feature_cache(demos, enc, out=tmp_path / "s.zarr", progress=False,
                            views=ViewsConfig(n=1, shift=0, scenes=str(short)))
    with pytest.raises(FileNotFoundError, match="variation=standard_visual"):
        ViewsConfig(n=1, shift=0, scenes=str(tmp_path / "missing.zarr")).key()
    with pytest.raises(ValueError, match="shift=0 only with scenes= and n=1"):
        ViewsConfig(n=2, shift=0, scenes=str(scenes))
