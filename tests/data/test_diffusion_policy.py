"""Tests for s2robot.data.diffusion_policy: reading Diffusion Policy ReplayBuffers, exporting stores as them."""

from __future__ import annotations

import json
import math
import sys
import zipfile
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr

from s2robot.data import diffusion_policy
from s2robot.data.diffusion_policy import export_diffusion_policy, open_diffusion_policy
from s2robot.data.store import EpisodeStore

LENGTHS = (5, 3, 7)
SIZE = 16  # frame side [px]


# ------------------------------------------------------------------------------------------ fixtures
def dp_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    """The chunks ``get_optimal_chunks`` (diffusion_policy/common/replay_buffer.py, target 2e6 bytes) gives an
    episode-shaped array whose single step is under 2 MB: whole steps, as many as fit in 2 MB, at most the episode."""
    step_bytes = np.dtype(dtype).itemsize * math.prod(shape[1:])
    return (min(shape[0], math.ceil(2e6 / step_bytes)), *shape[1:])


def write_replay_buffer(path: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    """Write ``episodes`` as Diffusion Policy's ReplayBuffer does (diffusion_policy/common/replay_buffer.py).

    ``create_empty_zarr``: groups data/ and meta/, meta/episode_ends (0,) int64 with compressor None (zarr 2 picks
    chunks (1,) for an empty array). ``add_episode`` per episode: a new key gets ``get_optimal_chunks`` of the first
    episode's shape and ``resolve_compressor('default')`` = Blosc lz4 level 5 no shuffle, fill 0; every key is
    resized and the episode written at its end; episode_ends grows by one, rechunked to int(1.5 E) uncompressed when
    E passes its chunk.
    """
    default = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data, meta = root.create_group("data"), root.create_group("meta")
    ends = meta.create_array("episode_ends", shape=(0,), chunks=(1,), dtype="int64", compressors=None, fill_value=0)
    n = 0
    for ep in episodes:
        t = len(next(iter(ep.values())))
        for key, value in ep.items():
            if key not in data:
                data.create_array(key, shape=(0, *value.shape[1:]), chunks=dp_chunks(value.shape, value.dtype),
                                  dtype=value.dtype, compressors=default, fill_value=0)
            arr = data[key]
            arr.resize((n + t, *value.shape[1:]))
            arr[n:] = value
        n += t
        ends.resize((ends.shape[0] + 1,))
        ends[-1] = n
        if ends.chunks[0] < ends.shape[0]:  # rechunk_recompress_array(meta, 'episode_ends', int(1.5 E))
            values = ends[:]
            del meta["episode_ends"]
            ends = meta.create_array("episode_ends", shape=values.shape, chunks=(int(len(values) * 1.5),),
                                     dtype="int64", compressors=None, fill_value=0)
            ends[:] = values


def write_converted(path: Path, episodes: list[dict[str, np.ndarray]], image_compressor: numcodecs.abc.Codec) -> None:
    """Write ``episodes`` as Diffusion Policy's dataset conversions do (real_world/real_data_conversion.py,
    dataset/robomimic_replay_image_dataset.py ``_convert_robomimic_to_replay``): every low-dim key one uncompressed
    chunk of its whole (N, ...) shape; images (N, H, W, 3) uint8 one frame per chunk with ``image_compressor``
    (imagecodecs' Jpeg2k(level=50) there, which is not installed here); meta/episode_ends (E,) int64 uncompressed."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data, meta = root.create_group("data"), root.create_group("meta")
    ends = np.cumsum([len(next(iter(ep.values()))) for ep in episodes]).astype(np.int64)
    meta.create_array("episode_ends", shape=ends.shape, chunks=ends.shape, dtype="int64", compressors=None,
                      fill_value=0)[:] = ends
    for key in episodes[0]:
        value = np.concatenate([ep[key] for ep in episodes])
        image = value.ndim == 4
        arr = data.create_array(key, shape=value.shape, chunks=(1, *value.shape[1:]) if image else value.shape,
                                dtype=value.dtype, compressors=image_compressor if image else None, fill_value=0)
        if image:
            for i, frame in enumerate(value):  # put_img: one frame at a time
                arr[i] = frame
        else:
            arr[:] = value


def pusht_episode(i: int, t: int) -> dict[str, np.ndarray]:
    """PushT's keys (pusht_image_dataset.py): img (T, H, W, 3) float32 in 0..255, state (T, 5), action (T, 2),
    keypoint (T, 9, 2)."""
    rng = np.random.default_rng(i)
    return {"img": rng.integers(0, 256, (t, SIZE, SIZE, 3)).astype(np.float32),
            "state": rng.uniform(0, 512, (t, 5)).astype(np.float32),
            "action": rng.uniform(0, 512, (t, 2)).astype(np.float32),
            "keypoint": rng.uniform(0, 512, (t, 9, 2)).astype(np.float32)}


def real_episode(i: int, t: int) -> dict[str, np.ndarray]:
    """The real-robot keys (real_world/real_env.py, real_data_conversion.py): camera_<i> uint8, robot_eef_pose,
    robot_joint, action, timestamp, stage."""
    rng = np.random.default_rng(100 + i)
    return {"camera_0": rng.integers(0, 256, (t, SIZE, SIZE + 4, 3), dtype=np.uint8),
            "camera_1": rng.integers(0, 256, (t, SIZE, SIZE, 3), dtype=np.uint8),
            "robot_eef_pose": rng.normal(size=(t, 6)), "robot_joint": rng.normal(size=(t, 6)),
            "action": rng.normal(size=(t, 6)), "timestamp": np.arange(t) / 10.0 + i,
            "stage": np.zeros(t, dtype=np.int64)}


@pytest.fixture
def pusht(tmp_path: Path) -> tuple[Path, list[dict[str, np.ndarray]]]:
    episodes = [pusht_episode(i, t) for i, t in enumerate(LENGTHS)]
    write_replay_buffer(tmp_path / "pusht.zarr", episodes)
    return tmp_path / "pusht.zarr", episodes


def make_store(path: Path) -> EpisodeStore:
    """A small EpisodeStore as the recorder writes one: rgb_front, proprio, action, action_executed, grasped."""
    store = EpisodeStore.create(path, attrs={"env_id": "CubePick-v0", "cameras": ["front"], "control_hz": 10})
    for i, t in enumerate(LENGTHS):
        rng = np.random.default_rng(200 + i)
        store.add_episode({"rgb_front": rng.integers(0, 256, (t, SIZE, SIZE, 3), dtype=np.uint8),
                           "proprio": rng.normal(size=(t, 8)).astype(np.float32),
                           "action": rng.normal(size=(t, 8)).astype(np.float32),
                           "action_executed": rng.normal(size=(t, 8)).astype(np.float32),
                           "grasped": rng.random(t) > 0.5}, info={"seed": i, "success": bool(i % 2)})
    return store


def assert_arrays_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# ------------------------------------------------------------------------------------------ reading
def test_reads_pusht_layout_bit_for_bit(pusht):
    """Every episode comes back as written; float 0..255 frames come back as the same values in uint8."""
    path, episodes = pusht
    source = open_diffusion_policy(path)
    assert len(source) == 3 and source.format == "diffusion_policy"
    assert source.keys() == {"action": (np.float32, (2,)), "img": (np.uint8, (SIZE, SIZE, 3)),
                             "keypoint": (np.float32, (9, 2)), "state": (np.float32, (5,))}
    for i, want in enumerate(episodes):
        got = source.episode(i)
        assert got.info == {"episode_index": i} and got.task is None
        assert_arrays_equal(got.data, {**want, "img": want["img"].astype(np.uint8)})
    assert set(source.episode(-1, keys=["action"]).data) == {"action"}
    keymap = source.default_map()
    assert (keymap.proprio, keymap.action, keymap.cameras) == (["state"], "action", {"img": "img"})
    info = json.loads(json.dumps(source.describe()))
    assert info["episodes"] == 3 and info["steps"] == sum(LENGTHS) and info["zarr_format"] == 2 and info["fps"] is None
    assert info["arrays"]["img"]["compressor"] == "blosc" and info["arrays"]["img"]["dtype"] == "<f4"


def test_reads_real_robot_layout_from_folder_and_zip(tmp_path):
    """uint8 camera_<i> one frame per chunk, uncompressed low-dim keys; a .zarr.zip reads the same."""
    episodes = [real_episode(i, t) for i, t in enumerate(LENGTHS)]
    folder = tmp_path / "real.zarr"
    write_converted(folder, episodes, numcodecs.Blosc("zstd", 5))
    assert zarr.open_group(str(folder), mode="r")["data/camera_0"].chunks == (1, SIZE, SIZE + 4, 3)
    zipped = tmp_path / "real.zarr.zip"
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_STORED) as z:  # as zarr 2's ZipStore stores members
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, str(p.relative_to(folder)))
    for path in (folder, zipped):
        source = open_diffusion_policy(path)
        for i, want in enumerate(episodes):
            assert_arrays_equal(source.episode(i).data, want)
        keymap = source.default_map()
        assert source.describe()["fps"] == 10.0  # from the timestamps [s]
        assert keymap.proprio == ["robot_eef_pose"]
        assert keymap.cameras == {"camera_0": "camera_0", "camera_1": "camera_1"}


def test_default_proprio_falls_back_to_float_vectors(tmp_path):
    """Without a known proprio key: every float (T, D) column but actions, timestamp and stage, sorted."""
    episodes = [{k: v for k, v in real_episode(i, t).items() if k != "robot_eef_pose"}
                for i, t in enumerate(LENGTHS)]
    write_replay_buffer(tmp_path / "r.zarr", episodes)
    assert open_diffusion_policy(tmp_path / "r.zarr").default_map().proprio == ["robot_joint"]


def test_float_frames_outside_0_255_are_refused(tmp_path):
    episodes = [pusht_episode(i, t) for i, t in enumerate(LENGTHS)]
    episodes[1]["img"] = episodes[1]["img"] / 255.0 * 300.0
    write_replay_buffer(tmp_path / "p.zarr", episodes)
    source = open_diffusion_policy(tmp_path / "p.zarr")
    source.episode(0)
    with pytest.raises(ValueError, match=r"data/img of episode 1 holds float frames .* outside 0\.\.255"):
        source.episode(1)


def test_missing_episode_ends_is_refused(pusht):
    path, _ = pusht
    zarr.open_group(str(path), mode="a", zarr_format=2)["meta"].__delitem__("episode_ends")
    with pytest.raises(ValueError, match=rf"{path} has no meta/episode_ends array: not a Diffusion Policy"):
        open_diffusion_policy(path)


def test_episode_ends_not_increasing_is_refused(pusht):
    path, _ = pusht
    zarr.open_group(str(path), mode="a", zarr_format=2)["meta/episode_ends"][:] = [5, 5, 15]
    with pytest.raises(ValueError, match=r"strictly increasing .* episode 1 ends at 5 after 5"):
        open_diffusion_policy(path)


def test_data_shorter_than_episode_ends_is_refused(pusht):
    path, _ = pusht
    zarr.open_group(str(path), mode="a", zarr_format=2)["data/action"].resize((sum(LENGTHS) - 2, 2))
    with pytest.raises(ValueError, match=r"data arrays \{'action': 13\} hold fewer steps than meta/episode_ends "
                                         r"covers \(15\)"):
        open_diffusion_policy(path)


def test_steps_past_the_last_episode_are_ignored_with_a_warning(pusht):
    path, episodes = pusht
    zarr.open_group(str(path), mode="a", zarr_format=2)["meta/episode_ends"].resize((2,))
    with pytest.warns(UserWarning, match=r"ignoring steps past the last episode end \(8\) .*'state': 7"):
        source = open_diffusion_policy(path)
    assert len(source) == 2
    np.testing.assert_array_equal(source.episode(1).data["state"], episodes[1]["state"])


def test_not_a_replay_buffer_is_refused(tmp_path):
    store = make_store(tmp_path / "store.zarr")
    with pytest.raises(ValueError, match=r"zarr format 3 \(an s2robot EpisodeStore\? open it with EpisodeStore"):
        open_diffusion_policy(store.path)
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"x.zip is a file but not a zip"):
        open_diffusion_policy(tmp_path / "x.zip")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_diffusion_policy(tmp_path / "missing.zarr")


def test_codec_not_installed_is_refused_naming_array_and_package(pusht, monkeypatch):
    """A camera array written with imagecodecs' Jpeg2k (real_data_conversion.py) needs imagecodecs."""
    path, _ = pusht
    zarray = path / "data" / "img" / ".zarray"
    doc = json.loads(zarray.read_text())
    zarray.write_text(json.dumps({**doc, "compressor": {"id": "imagecodecs_jpeg2k", "level": 50}}))
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # as if not installed
    monkeypatch.delitem(numcodecs.registry.codec_registry, "imagecodecs_jpeg2k", raising=False)
    with pytest.raises(ValueError, match=r"array data/img is compressed with 'imagecodecs_jpeg2k', which needs the "
                                         r"imagecodecs package: pip install imagecodecs"):
        open_diffusion_policy(path)


# ------------------------------------------------------------------------------------------ export
def test_export_round_trips_bit_for_bit_as_zarr_format_2(tmp_path):
    """store → ReplayBuffer → source: every key bit-equal; the files on disk are zarr 2 as Diffusion Policy writes."""
    store = make_store(tmp_path / "store.zarr")
    out = export_diffusion_policy(store, tmp_path / "dp.zarr")
    assert out == tmp_path / "dp.zarr" and sorted(p.name for p in tmp_path.iterdir()) == ["dp.zarr", "store.zarr"]
    assert not list(out.rglob("zarr.json"))
    for group in ("", "data", "meta"):
        assert json.loads((out / group / ".zgroup").read_text()) == {"zarr_format": 2}
    rgb = json.loads((out / "data" / "rgb_front" / ".zarray").read_text())
    assert rgb["zarr_format"] == 2 and rgb["chunks"] == [1, SIZE, SIZE, 3] and rgb["dtype"] == "|u1"
    assert rgb["compressor"] == {"id": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 2, "blocksize": 0}
    ends = json.loads((out / "meta" / "episode_ends" / ".zarray").read_text())
    assert (ends["dtype"], ends["compressor"], ends["shape"]) == ("<i8", None, [3])
    assert json.loads((out / "data" / "proprio" / ".zarray").read_text())["chunks"] == [sum(LENGTHS), 8]
    attrs = json.loads((out / ".zattrs").read_text())["s2robot"]
    assert attrs["source_fingerprint"] == store.fingerprint and attrs["episodes"][1]["seed"] == 1

    source = open_diffusion_policy(out)
    assert len(source) == store.n_episodes
    assert {k: spec for k, spec in source.keys().items()} == {k: store.spec(k) for k in store.keys}
    for i in range(store.n_episodes):
        assert_arrays_equal(source.episode(i).data, store.get_episode(i))
    keymap = source.default_map()
    assert (keymap.proprio, keymap.action, keymap.cameras) == (["proprio"], "action", {"front": "rgb_front"})


def test_export_through_the_importer_gives_the_store_back(tmp_path):
    """store → ReplayBuffer → import_source → store: proprio, action and rgb_<camera> bit-equal."""
    importer = pytest.importorskip("s2robot.data.importer")
    store = make_store(tmp_path / "store.zarr")
    out = export_diffusion_policy(store, tmp_path / "dp.zarr")
    back = importer.import_source(open_diffusion_policy(out), tmp_path / "back.zarr", image_size=SIZE, progress=False)
    assert back.n_episodes == store.n_episodes and back.attrs["control_hz"] == 10.0
    for i in range(store.n_episodes):
        got, want = back.get_episode(i), store.get_episode(i)
        assert_arrays_equal({k: got[k] for k in ("proprio", "action", "rgb_front")},
                            {k: want[k] for k in ("proprio", "action", "rgb_front")})


def test_export_never_replaces_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    store = make_store(tmp_path / "store.zarr")
    taken = tmp_path / "taken.zarr"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"taken.zarr already exists; nothing was written"):
        export_diffusion_policy(store, taken)
    assert (taken / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match=r"writes a zarr folder, not a zip"):
        export_diffusion_policy(store, tmp_path / "dp.zarr.zip")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(diffusion_policy, "_chunk_length", fail)
    with pytest.raises(OSError, match="disk full"):
        export_diffusion_policy(store, tmp_path / "dp.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr", "taken.zarr"]
