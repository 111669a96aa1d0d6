"""LeRobotDataset v3.0 (s2robot.data.lerobot): reading datasets written the way LeRobot 0.6 writes them, refusing
damaged ones, the exporter, and the store → LeRobot → store round trip."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from s2robot.data.importer import import_source
from s2robot.data.lerobot import export_lerobot, open_lerobot
from s2robot.data.store import EpisodeStore
from s2robot.workflows.store import main

FPS = 10
CAMERA = "observation.images.front"
# Frames through the codec at crf 10, measured on scene_frames (below) at 32×32 px: h264 max 38, mean 2.5, PSNR 34.4 dB;
# av1 max 49, mean 2.9, PSNR 33.2 dB. Most of it is yuv420p's halved chroma resolution at the red disc's edge (crf 0
# gives h264 max 36, mean 2.4). Bounds with a margin for other codec builds: (max abs, mean abs, min PSNR [dB]).
CODEC_BOUND = (64, 3.5, 32.0)


def scene_frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(n, h, w, 3) uint8 frames of a smooth scene: a lit gradient and a soft red disc moving across it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    out = []
    for t in range(n):
        base = np.stack([90 + 60 * x / w, 110 + 50 * y / h, 140 + 30 * (x + y) / (w + h)], axis=-1)
        r = np.hypot(x - cx - t * 0.8, y - cy)
        disc = np.clip((0.22 * min(h, w) - r) / 3.0, 0.0, 1.0)[..., None]  # soft edge over 3 px
        out.append(base * (1 - disc) + np.array([200.0, 40.0, 30.0]) * disc)
    return np.stack(out).round().clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------ a LeRobot v3.0 dataset, written as LeRobot does
def encode_episode_video(frames: np.ndarray, path: Path, vcodec: str = "libx264") -> None:
    """``datasets/video_utils.py`` ``encode_video_frames`` (v0.6.0): ``add_stream(vcodec, fps, options)`` with
    ``VideoEncoderConfig.get_codec_options`` (g=2, crf=30), pix_fmt yuv420p, size from the first image, frames via
    ``av.VideoFrame.from_image`` of RGB PIL images, then the encoder flushed."""
    with av.open(str(path), "w") as output:
        stream = output.add_stream(vcodec, FPS, options={"g": "2", "crf": "30"})
        stream.pix_fmt, stream.width, stream.height = "yuv420p", frames.shape[2], frames.shape[1]
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_image(Image.fromarray(frame).convert("RGB"))):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


def concatenate_videos(paths: list[Path], out: Path) -> None:
    """``video_utils.concatenate_video_files``: an ffconcat list through the concat demuxer, packets copied (streams
    from ``add_stream_from_template`` with the input time base), ``movflags=faststart``."""
    listing = out.with_suffix(".ffconcat")
    listing.write_text("ffconcat version 1.0\n" + "".join(f"file '{p.resolve()}'\n" for p in paths))
    with av.open(str(listing), "r", format="concat", options={"safe": "0"}) as src, \
            av.open(str(out), "w", options={"movflags": "faststart"}) as dst:
        stream = src.streams.video[0]
        copy = dst.add_stream_from_template(template=stream, opaque=True)
        copy.time_base = stream.time_base
        for packet in src.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = copy
            dst.mux(packet)
    listing.unlink()


def video_duration_s(path: Path) -> float:
    """``video_utils.get_video_duration_in_s``: the stream's duration × time base."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.duration * stream.time_base)


def write_lerobot_v3(root: Path, episodes: list[dict], image: str = "video", short_video: int = 0,
                     vcodec: str = "libx264") -> Path:
    """A LeRobotDataset v3.0 at ``root`` as LeRobot 0.6's ``LeRobotDataset.create`` + ``add_frame``/``save_episode``
    write it: one data file, one mp4 per camera, one episodes file (all chunk-000/file-000).

    episodes: [{"state": (T, P) f32, "action": (T, A) f32, "frames": (T, H, W, 3) uint8, "task": str}]; image: the
    camera's dtype, ``video`` (mp4) or ``image`` (PNG bytes in the parquet, ``datasets.Image``); short_video: frames
    left out of the last episode's mp4 (a truncated video).
    """
    h, w = episodes[0]["frames"].shape[1:3]
    features = {  # dataset_metadata.create: {**features, **DEFAULT_FEATURES}
        "action": {"dtype": "float32", "shape": [episodes[0]["action"].shape[1]], "names": None},
        "observation.state": {"dtype": "float32", "shape": [episodes[0]["state"].shape[1]], "names": None},
        CAMERA: {"dtype": image, "shape": [h, w, 3], "names": ["height", "width", "channels"]},
        **{k: {"dtype": d, "shape": [1], "names": None} for k, d in
           (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"),
            ("task_index", "int64"))}}
    tasks = list(dict.fromkeys(ep["task"] for ep in episodes))
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    video_dir = root / "videos" / CAMERA / "chunk-000"
    video_dir.mkdir(parents=True)
    tables, rows, clips, start, ts = [], [], [], 0, 0.0
    for e, ep in enumerate(episodes):
        T = len(ep["action"])
        frame = np.arange(T)
        cols = {"action": _fixed(ep["action"]), "observation.state": _fixed(ep["state"])}
        if image == "image":  # embed_images: {"bytes": PNG, "path": None} per frame
            cols[CAMERA] = pa.array([{"bytes": _png(f), "path": None} for f in ep["frames"]],
                                    pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        cols |= {"timestamp": pa.array((frame / FPS).astype(np.float32)), "frame_index": pa.array(frame),
                 "episode_index": pa.array(np.full(T, e)), "index": pa.array(frame + start),
                 "task_index": pa.array(np.full(T, tasks.index(ep["task"])))}
        tables.append(pa.table(cols))
        row = {"episode_index": e, "tasks": [ep["task"]], "length": T, "data/chunk_index": 0, "data/file_index": 0,
               "dataset_from_index": start, "dataset_to_index": start + T}
        if image == "video":  # _save_episode_video: from = the file's duration so far, to = from + this episode's
            clip = root / f"episode_{e}.mp4"
            cut = short_video if e == len(episodes) - 1 else 0
            encode_episode_video(ep["frames"][: T - cut], clip, vcodec)
            clips.append(clip)
            duration = video_duration_s(clip)
            row |= {f"videos/{CAMERA}/chunk_index": 0, f"videos/{CAMERA}/file_index": 0,
                    f"videos/{CAMERA}/from_timestamp": ts, f"videos/{CAMERA}/to_timestamp": ts + duration}
            ts += duration
        row |= {"stats/action/mean": ep["action"].mean(0).tolist(), "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0}
        rows.append(row)
        start += T
    if clips:
        concatenate_videos(clips, video_dir / "file-000.mp4")
        for clip in clips:
            clip.unlink()
    # _save_episode_data: one ParquetWriter (snappy, dictionary), one write_table per episode
    with pq.ParquetWriter(root / "data/chunk-000/file-000.parquet", tables[0].schema, compression="snappy",
                          use_dictionary=True) as writer:
        for table in tables:
            writer.write_table(table)
    # _flush_metadata_buffer: pa.Table.from_pydict of the buffered episode dicts
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet", compression="snappy")
    # write_tasks: DataFrame({"task_index": ...}, index=Index(tasks, name="task")).to_parquet: task_index, task
    pq.write_table(pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": tasks}),
                   root / "meta/tasks.parquet")
    info = {"codebase_version": "v3.0", "fps": FPS, "features": features, "total_episodes": len(episodes),
            "total_frames": start, "total_tasks": len(tasks), "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "robot_type": "so101", "splits": {"train": f"0:{len(episodes)}"}}
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (root / "meta" / "stats.json").write_text(json.dumps({}))
    return root


def _fixed(x: np.ndarray) -> pa.Array:
    """(T, D) as the fixed-size lists ``datasets.Sequence(length=D)`` writes."""
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def _png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def make_episodes(lengths: tuple[int, ...] = (5, 7, 4), h: int = 32, w: int = 48) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"state": rng.normal(size=(n, 6)).astype(np.float32), "action": rng.normal(size=(n, 4)).astype(np.float32),
             "frames": scene_frames(n, h, w, seed=e), "task": f"pick the cube {e % 2}"} for e, n in enumerate(lengths)]


def codec_error(got: np.ndarray, want: np.ndarray) -> tuple[int, float, float]:
    """(max abs, mean abs, PSNR [dB]) of uint8 frames."""
    d = got.astype(np.float64) - want.astype(np.float64)
    return int(np.abs(d).max()), float(np.abs(d).mean()), float(10 * np.log10(255**2 / max((d**2).mean(), 1e-12)))


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list[dict]]:
    episodes = make_episodes()
    return write_lerobot_v3(tmp_path / "lerobot", episodes), episodes


def test_reads_a_dataset_written_as_lerobot_writes_it(dataset: tuple[Path, list[dict]]) -> None:
    """Columns, default map, tasks and fps; arrays bit for bit, frames of every episode within the codec's error
    (the episodes share one concatenated mp4, located by from_timestamp)."""
    root, episodes = dataset
    source = open_lerobot(root)
    assert len(source) == 3 and source.describe()["fps"] == FPS and source.describe()["robot_type"] == "so101"
    assert source.keys() == {"action": (np.dtype("float32"), (4,)), "observation.state": (np.dtype("float32"), (6,)),
                             CAMERA: (np.dtype("uint8"), (32, 48, 3))}
    key_map = source.default_map()
    assert (key_map.proprio, key_map.action, key_map.cameras) == (["observation.state"], "action", {"front": CAMERA})
    for i, want in enumerate(episodes):
        ep = source.episode(i)
        np.testing.assert_array_equal(ep.data["observation.state"], want["state"])
        np.testing.assert_array_equal(ep.data["action"], want["action"])
        assert ep.task == want["task"] and ep.info == {"episode_index": i}
        max_abs, mean_abs, psnr = codec_error(ep.data[CAMERA], want["frames"])  # crf 30, as LeRobot records
        assert mean_abs < 4.5 and psnr > 31, (max_abs, mean_abs, psnr)


def test_reads_png_image_features(tmp_path: Path) -> None:
    """``image`` features (PNG bytes embedded in the parquet) come back bit for bit."""
    episodes = make_episodes((3, 2))
    source = open_lerobot(write_lerobot_v3(tmp_path / "png", episodes, image="image"))
    assert source.keys()[CAMERA] == (np.dtype("uint8"), (32, 48, 3))
    np.testing.assert_array_equal(source.episode(1).data[CAMERA], episodes[1]["frames"])


def test_refuses_a_video_shorter_than_the_index(tmp_path: Path) -> None:
    root = write_lerobot_v3(tmp_path / "short", make_episodes(), short_video=2)
    source = open_lerobot(root)
    source.episode(0)
    with pytest.raises(ValueError, match=r"file-000\.mp4: holds 2 frames .* episode 2 has 4 steps: the video is "
                                         "truncated"):
        source.episode(2)


def test_refuses_damaged_parquet_naming_the_file(dataset: tuple[Path, list[dict]]) -> None:
    root, _ = dataset
    data = root / "data/chunk-000/file-000.parquet"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    source = open_lerobot(root)
    with pytest.raises(ValueError, match=r"data/chunk-000/file-000\.parquet: not a readable parquet file .*download"):
        source.episode(0)
    meta = root / "meta/episodes/chunk-000/file-000.parquet"
    meta.write_bytes(b"PAR1 garbage")
    with pytest.raises(ValueError, match=r"meta/episodes/chunk-000/file-000\.parquet: not a readable parquet"):
        open_lerobot(root)


def test_refuses_other_versions_and_non_datasets(dataset: tuple[Path, list[dict]], tmp_path: Path) -> None:
    root, _ = dataset
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(ValueError, match=r"codebase_version v2\.1; this reader reads v3\.x\. Convert"):
        open_lerobot(root)
    with pytest.raises(FileNotFoundError, match=r"has no meta/info\.json"):
        open_lerobot(tmp_path)


def make_store(path: Path, lengths: tuple[int, ...] = (6, 9, 5), size: int = 32, **attrs: object) -> EpisodeStore:
    """A demo store of scene frames (rgb_front), proprio, action and an extra key, at 10 Hz."""
    rng = np.random.default_rng(1)
    store = EpisodeStore.create(path, attrs={"control_hz": FPS, **attrs})
    for i, n in enumerate(lengths):
        store.add_episode({"rgb_front": scene_frames(n, size, size, seed=10 + i),
                           "proprio": rng.normal(size=(n, 8)).astype(np.float32),
                           "action": rng.normal(size=(n, 8)).astype(np.float32),
                           "cube_pos": rng.normal(size=(n, 3)).astype(np.float32)}, info={"task": f"task {i % 2}"})
    return store


def test_export_writes_lerobot_v3_layout(tmp_path: Path) -> None:
    """info.json, stats.json (images per channel (3, 1, 1) in [0, 1]), tasks, episodes and data as LeRobot writes."""
    store = make_store(tmp_path / "demos.zarr")
    out = export_lerobot(store, tmp_path / "lr", progress=False)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS and info["total_episodes"] == 3
    assert (info["total_frames"], info["total_tasks"], info["splits"]) == (20, 2, {"train": "0:3"})
    feats = info["features"]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [8], "names": None}
    assert feats["observation.images.front"]["shape"] == [32, 32, 3]
    assert feats["observation.images.front"]["info"]["video.codec"] == "h264"
    assert list(feats)[-5:] == ["timestamp", "frame_index", "episode_index", "index", "task_index"]
    stats = json.loads((out / "meta/stats.json").read_text())
    image = {k: np.asarray(v) for k, v in stats["observation.images.front"].items()}
    assert image["mean"].shape == (3, 1, 1) and 0 <= image["min"].min() <= image["max"].max() <= 1
    np.testing.assert_allclose(image["mean"].ravel(), store.array("rgb_front")[:].reshape(-1, 3).mean(0) / 255)
    np.testing.assert_allclose(stats["action"]["mean"], store.array("action")[:].mean(0), rtol=1e-6)
    assert stats["action"]["count"] == [20] and set(stats["action"]) >= {"min", "max", "std", "q01", "q99"}
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), 8)
    assert data.column("index").to_pylist() == list(range(20)) and data.column("timestamp").type == pa.float32()
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["dataset_from_index"], e["dataset_to_index"], e["tasks"]) for e in episodes] == [
        (0, 6, ["task 0"]), (6, 15, ["task 1"]), (15, 20, ["task 0"])]
    assert episodes[1][f"videos/{CAMERA}/from_timestamp"] == 0.6 and episodes[1][f"videos/{CAMERA}/to_timestamp"] == 1.5
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert dict(zip(tasks["task"].to_pylist(), tasks["task_index"].to_pylist(), strict=True)) == {"task 0": 0,
                                                                                                  "task 1": 1}


@pytest.mark.parametrize("codec", ["h264", "av1"])
def test_round_trip_store_lerobot_store(tmp_path: Path, codec: str) -> None:
    """store → LeRobot v3 → store: proprio, action and extra keys bit-equal, frames within CODEC_BOUND at crf 10."""
    store = make_store(tmp_path / "demos.zarr")
    out = export_lerobot(store, tmp_path / "lr", codec=codec, crf=10, progress=False)
    source = open_lerobot(out)
    assert source.keys()["cube_pos"] == (np.dtype("float32"), (3,))
    back = import_source(source, tmp_path / "back.zarr", image_size=32, progress=False)
    assert back.n_episodes == 3 and np.array_equal(back.episode_ends, store.episode_ends)
    for k in ("proprio", "action"):
        assert np.array_equal(back.array(k)[:], store.array(k)[:]), k
    assert np.array_equal(np.concatenate([source.episode(i).data["cube_pos"] for i in range(3)]),
                          store.array("cube_pos")[:])
    max_abs, mean_abs, psnr = codec_error(back.array("rgb_front")[:], store.array("rgb_front")[:])
    assert max_abs <= CODEC_BOUND[0] and mean_abs <= CODEC_BOUND[1] and psnr >= CODEC_BOUND[2], (max_abs, mean_abs,
                                                                                                   psnr)
    assert [back.episode_info(i)["task"] for i in range(3)] == ["task 0", "task 1", "task 0"]


def test_export_refusals(tmp_path: Path) -> None:
    store = make_store(tmp_path / "demos.zarr", lengths=(3,))
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="already exists; nothing was changed"):
        export_lerobot(store, tmp_path / "taken", progress=False)
    with pytest.raises(ValueError, match="codec 'vp9' is not available"):
        export_lerobot(store, tmp_path / "a", codec="vp9", progress=False)
    odd = make_store(tmp_path / "odd.zarr", lengths=(2,), size=33)
    with pytest.raises(ValueError, match=r"odd size \(33, 33\); yuv420p video needs even"):
        export_lerobot(odd, tmp_path / "b", progress=False)
    no_rate = make_store(tmp_path / "norate.zarr", lengths=(2,), control_hz=None)
    with pytest.raises(ValueError, match="needs an integer fps: pass --fps"):
        export_lerobot(no_rate, tmp_path / "c", progress=False)
    assert not any(p.name in ("a", "b", "c") or p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_cli_export_then_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_store(tmp_path / "demos.zarr", lengths=(4, 3))
    assert main(["export", str(tmp_path / "demos.zarr"), "--format", "lerobot", "--out", str(tmp_path / "lr"),
                 "--codec", "av1"]) == 0
    assert main(["import", str(tmp_path / "lr"), "--format", "lerobot", "--out", str(tmp_path / "back.zarr"),
                 "--image-size", "16"]) == 0
    assert "2 episodes, 7 steps from lerobot dataset" in capsys.readouterr().out
    assert EpisodeStore.open(tmp_path / "back.zarr").spec("rgb_front") == (np.dtype(np.uint8), (16, 16, 3))
    assert main(["export", str(tmp_path / "demos.zarr"), "--format", "lerobot", "--out", str(tmp_path / "lr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "lr already exists; nothing was changed" in err and err.count("\n") == 1
