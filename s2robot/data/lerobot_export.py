"""An EpisodeStore written as a LeRobotDataset v3.0 (``export_lerobot``), the layout ``data.lerobot`` reads.

``proprio`` → ``observation.state``, ``action`` → ``action`` (float32 in parquet: bit for bit), every other non-image
key under its own name, and ``rgb_<camera>`` → ``observation.images.<camera>``: an mp4 per camera (yuv420p, H.264 or
AV1, keyframe every 2 frames as LeRobot's ``VideoEncoderConfig`` does), so frames come back within the codec's error
(docs/interop.md). Episodes are concatenated into one data file and one mp4 per camera until LeRobot's size limits
(100 MB, 200 MB), then the next file (``update_chunk_file_indices``); episode ``e``'s frames sit at ``from_timestamp +
frame_index / fps``. Stats follow ``compute_stats.py``: per feature min/max/mean/std/count/q01..q99, images per
channel in [0, 1] with shape (3, 1, 1), here exact (from per-channel histograms) rather than sampled.

Sources (LeRobot v0.6.0): ``datasets/dataset_writer.py`` (_save_episode_data: ParquetWriter snappy, one row group per
episode; _save_episode_video), ``datasets/dataset_metadata.py`` (save_episode, _flush_metadata_buffer),
``datasets/feature_utils.py`` (get_hf_features_from_features, create_empty_dataset_info), ``datasets/utils.py``
(DatasetInfo.to_dict), ``datasets/video_utils.py`` (encode_video_frames, get_video_info), ``configs/video.py``
(VideoEncoderConfig: g=2, crf=30, libsvtav1 preset 12), ``datasets/io_utils.py`` (write_tasks: pandas, index "task").
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from s2robot.data.keys import is_rgb, rgb_cameras, rgb_key
from s2robot.data.lerobot import (
    ACTION,
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_FEATURES,
    EPISODES_PATH,
    IMAGES,
    INFO_PATH,
    STATE,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
)
from s2robot.data.store import EpisodeStore

CODECS = {"h264": ("libx264", "h264"), "av1": ("libsvtav1", "av1")}  # --codec: (PyAV encoder, info.json codec)
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200  # utils.py DEFAULT_CHUNK_SIZE, DEFAULT_*_FILE_SIZE_IN_MB
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # compute_stats.py DEFAULT_QUANTILES -> q01, q10, q50, q90, q99


def next_file(chunk: int, file: int) -> tuple[int, int]:
    """The (chunk, file) after ``(chunk, file)``: LeRobot's ``update_chunk_file_indices``."""
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def _quantile_keys() -> list[str]:
    return [f"q{round(q * 100):02d}" for q in QUANTILES]


def vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of (N, D) values over N: min/max/mean/std (D,), count (1,), quantiles (D,)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    return out | dict(zip(_quantile_keys(), np.quantile(x, QUANTILES, axis=0), strict=True))


def channel_histogram(frames: np.ndarray) -> np.ndarray:
    """(3, 256) int64 counts of every uint8 value per channel of (T, H, W, 3) frames."""
    flat = frames.reshape(-1, 3)
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(3)]).astype(np.int64)


def image_stats(hist: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
    """LeRobot's per-channel image stats, in [0, 1] with shape (3, 1, 1), from (3, 256) value counts (exact)."""
    v = np.arange(256) / 255.0
    n = hist.sum(1)  # (3,) pixels per channel
    mean = hist @ v / n
    out = {"min": np.array([v[np.flatnonzero(h)[0]] for h in hist]), "max": np.array([v[np.flatnonzero(h)[-1]]
                                                                                      for h in hist]),
           "mean": mean, "std": np.sqrt(np.maximum(hist @ v**2 / n - mean**2, 0.0))}
    cum = np.cumsum(hist, axis=1)
    out |= {k: v[np.argmax(cum >= q * n[:, None], axis=1)] for k, q in zip(_quantile_keys(), QUANTILES, strict=True)}
    return {k: s.reshape(3, 1, 1) for k, s in out.items()} | {"count": np.array([n_frames])}


class _VideoFiles:
    """One camera's mp4 files: each episode's frames appended to the open file, the next file once it holds
    ``VIDEO_FILE_MB``; an episode never spans two files."""

    def __init__(self, root: Path, key: str, codec: str, crf: int, fps: int) -> None:
        self.root, self.key, self.codec, self.crf, self.fps = root, key, codec, crf, fps
        self.chunk, self.file, self.frames, self.bytes = 0, 0, 0, 0
        self.container: Any = None
        self.stream: Any = None

    def _open(self, height: int, width: int) -> None:
        import av

        path = self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk, file_index=self.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        options = {"g": "2", "crf": str(self.crf)} | ({"preset": "12"} if self.codec == "libsvtav1" else {})
        if self.codec == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner of ~20 lines per file to stderr otherwise
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(self.codec, self.fps, options=options)
        self.stream.pix_fmt, self.stream.width, self.stream.height = "yuv420p", width, height
        self.frames = self.bytes = 0

    def _mux(self, packets: Any) -> None:
        for packet in packets:
            self.bytes += packet.size
            self.container.mux(packet)

    def add(self, frames: np.ndarray) -> dict[str, Any]:
        """Append one episode's (T, H, W, 3) uint8 frames; its ``videos/<key>/...`` episode metadata."""
        import av

        if self.container is not None and self.bytes >= VIDEO_FILE_MB * 1024**2:
            self.close()
            self.chunk, self.file = next_file(self.chunk, self.file)
        if self.container is None:
            self._open(frames.shape[1], frames.shape[2])
        start = self.frames
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = self.frames, Fraction(1, self.fps)
            self._mux(self.stream.encode(video_frame))
            self.frames += 1
        prefix = f"videos/{self.key}/"
        return {prefix + "chunk_index": self.chunk, prefix + "file_index": self.file,
                prefix + "from_timestamp": start / self.fps, prefix + "to_timestamp": self.frames / self.fps}

    def close(self) -> None:
        if self.container is not None:
            self._mux(self.stream.encode())
            self.container.close()
            self.container = None


class _DataFiles:
    """The frame parquet files: one row group per episode, the next file once one holds ``DATA_FILE_MB``."""

    def __init__(self, root: Path, schema: pa.Schema) -> None:
        self.root, self.schema = root, schema
        self.chunk, self.file, self.bytes = 0, 0, 0
        self.writer: pq.ParquetWriter | None = None

    def add(self, table: pa.Table) -> tuple[int, int]:
        if self.writer is not None and self.bytes + table.nbytes >= DATA_FILE_MB * 1024**2:
            self.close()
            self.chunk, self.file = next_file(self.chunk, self.file)
        if self.writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer, self.bytes = pq.ParquetWriter(path, self.schema, compression="snappy", use_dictionary=True), 0
        self.writer.write_table(table.cast(self.schema))
        self.bytes += table.nbytes
        return self.chunk, self.file

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _columns(store: EpisodeStore) -> dict[str, str]:
    """{store key: LeRobot feature} of the per-step arrays that go to parquet (every key but the frames)."""
    names = {"proprio": STATE, "action": ACTION}
    copy = (store.attrs.get("imported") or {}).get("action_space") == "absolute"  # target: the action's values again
    out = {}
    for k in store.keys:
        if is_rgb(k) or (copy and k == "target"):
            continue
        name = names.get(k, k)
        out[k] = f"s2robot.{name}" if name in DEFAULT_FEATURES else name
    return out


def _arrow_type(dtype: np.dtype, shape: tuple[int, ...]) -> pa.DataType:
    t = pa.from_numpy_dtype(dtype)
    for n in reversed(shape):
        t = pa.list_(t, n)
    return t


def _arrow_array(x: np.ndarray) -> pa.Array:
    """(T, ...) values as T rows of (nested) fixed-size lists, the type ``datasets`` gives a shaped feature."""
    arr = pa.array(np.ascontiguousarray(x).reshape(-1))
    for n in reversed(x.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, n)
    return arr


def _hf_feature(dtype: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """The ``datasets`` 4 feature (``Features.to_dict``) LeRobot declares for a column
    (``get_hf_features_from_features``)."""
    feature: dict[str, Any] = {"dtype": dtype, "_type": "Value"}
    for n in reversed(shape if shape != (1,) else ()):
        feature = {"feature": feature, "length": n, "_type": "List"}
    return feature


def _schema(store: EpisodeStore, columns: Mapping[str, str]) -> pa.Schema:
    """The frame parquet schema: the store's columns then LeRobot's default ones, with the ``huggingface`` metadata
    ``datasets`` writes."""
    fields = [(name, store.spec(k)[0], store.spec(k)[1]) for k, name in columns.items()]
    fields += [(name, np.dtype(dtype), ()) for name, dtype in DEFAULT_FEATURES.items()]
    hf = {name: _hf_feature(dtype.name, shape or (1,)) for name, dtype, shape in fields}
    return pa.schema([pa.field(name, _arrow_type(dtype, shape)) for name, dtype, shape in fields],
                     metadata={"huggingface": json.dumps({"info": {"features": hf}})})


def _frame_arrays(ep: Mapping[str, np.ndarray], columns: Mapping[str, str], episode: int, start: int, task: int,
                  fps: int) -> dict[str, np.ndarray]:
    """One episode's parquet columns {feature: (T, ...)}: the store's arrays, then LeRobot's per-frame indices
    (``add_frame``: timestamp = frame_index / fps; ``save_episode``: index counts frames over the dataset)."""
    T = len(ep["action"])
    frame = np.arange(T, dtype=np.int64)
    return {name: ep[k] for k, name in columns.items()} | {
        "timestamp": (frame / fps).astype(np.float32), "frame_index": frame,
        "episode_index": np.full(T, episode, np.int64), "index": frame + start,
        "task_index": np.full(T, task, np.int64)}


def _shaped(stats: dict[str, np.ndarray], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {k: v if k == "count" else v.reshape(shape or (1,)) for k, v in stats.items()}


def _features(store: EpisodeStore, columns: Mapping[str, str], fps: int, codec: str, crf: int) -> dict[str, Any]:
    """info.json ``features``: the store's columns, a video per camera (with ``get_video_info``'s ``info``), then
    LeRobot's default columns."""
    feats: dict[str, Any] = {}
    for k, name in columns.items():
        dtype, shape = store.spec(k)
        feats[name] = {"dtype": dtype.name, "shape": list(shape) or [1], "names": None}
    for cam in rgb_cameras(store.keys):
        h, w = store.spec(rgb_key(cam))[1][:2]
        info = {"video.height": h, "video.width": w, "video.codec": CODECS[codec][1], "video.pix_fmt": "yuv420p",
                "video.fps": fps, "video.channels": 3, "has_audio": False, "video.g": 2, "video.crf": crf,
                **({"video.preset": 12} if codec == "av1" else {}), "video.fast_decode": 0,
                "video.video_backend": "pyav", "video.extra_options": {}, "is_depth_map": False}
        feats[IMAGES + cam] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                               "info": info}
    return feats | {name: {"dtype": dtype, "shape": [1], "names": None} for name, dtype in DEFAULT_FEATURES.items()}


def _write_tasks(root: Path, tasks: Mapping[str, int]) -> None:
    """meta/tasks.parquet as ``write_tasks`` leaves it: column ``task_index``, pandas index ``task`` (the strings)."""
    pandas = {"index_columns": ["task"], "column_indexes": [],
              "creator": {"library": "pyarrow", "version": pa.__version__},
              "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                           "numpy_type": "int64", "metadata": None},
                          {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                           "metadata": None}], "pandas_version": "2.2.3"}
    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()), "task": pa.array(list(tasks))})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas)}), root / TASKS_PATH)


def _json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4, ensure_ascii=False))  # io_utils.write_json


def _episode_task(store: EpisodeStore, i: int, task: str | None) -> str:
    """``task`` if given, else the episode's own (imported stores keep it), the store's, or its name in words."""
    return task or store.episode_info(i).get("task") or store.attrs.get("task") or store.path.stem.replace("_", " ")


def _check_export(store: EpisodeStore, out: Path, codec: str, fps: float | None, crf: int) -> int:
    """The dataset's fps, once the store, codec and ``out`` can make a LeRobot dataset; else a ValueError saying why."""
    import av

    if out.exists():
        raise FileExistsError(f"{out} already exists; nothing was changed: pass another --out or remove it")
    missing = [k for k in ("proprio", "action") if k not in store.keys]
    if store.n_episodes == 0 or missing:
        raise ValueError(f"{store.path} cannot be exported: it has {store.n_episodes} episodes and lacks {missing} "
                         f"(keys: {list(store.keys)})")
    if codec not in CODECS or CODECS[codec][0] not in av.codecs_available:
        raise ValueError(f"codec {codec!r} is not available: pass --codec one of "
                         f"{[c for c, (e, _) in CODECS.items() if e in av.codecs_available]}")
    if not 0 <= crf <= 63:
        raise ValueError(f"crf must be in [0, 63] (lower: better quality, larger files), got {crf}")
    odd = [cam for cam in rgb_cameras(store.keys) if any(n % 2 for n in store.spec(rgb_key(cam))[1][:2])]
    if odd:
        raise ValueError(f"{store.path}: frames of {odd} have an odd size {store.spec(rgb_key(odd[0]))[1][:2]}; "
                         "yuv420p video needs even width and height: import or record the store at an even image size")
    fps = fps if fps is not None else store.attrs.get("control_hz")
    if fps is None or fps <= 0 or float(fps) != int(fps):
        raise ValueError(f"{store.path} records no integer control rate (attrs control_hz = "
                         f"{store.attrs.get('control_hz')!r}); LeRobot needs an integer fps: pass --fps")
    return int(fps)


def _write(store: EpisodeStore, root: Path, codec: str, fps: int, crf: int, task: str | None, progress: bool) -> None:
    """Every episode of ``store`` into the dataset folder ``root`` (frames, videos, episodes, tasks, stats, info)."""
    columns, cameras = _columns(store), rgb_cameras(store.keys)
    data = _DataFiles(root, _schema(store, columns))
    videos = {cam: _VideoFiles(root, IMAGES + cam, CODECS[codec][0], crf, fps) for cam in cameras}
    tasks: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    values: dict[str, list[np.ndarray]] = {}
    hists = {cam: np.zeros((3, 256), np.int64) for cam in cameras}
    start = 0
    try:
        name = root.name.strip(".").removesuffix(".partial")
        for i in tqdm(range(store.n_episodes), unit="ep", desc=f"exporting {name}", disable=not progress):
            ep, t = store.get_episode(i), _episode_task(store, i, task)
            arrays = _frame_arrays(ep, columns, i, start, tasks.setdefault(t, len(tasks)), fps)
            T = len(arrays["index"])
            chunk, file = data.add(pa.table({name: _arrow_array(a) for name, a in arrays.items()}))
            row = {"episode_index": i, "tasks": [t], "length": T, "data/chunk_index": chunk, "data/file_index": file,
                   "dataset_from_index": start, "dataset_to_index": start + T}
            stats = {name: _shaped(vector_stats(a), a.shape[1:]) for name, a in arrays.items()}
            for cam in cameras:
                row |= videos[cam].add(ep[rgb_key(cam)])
                hist = channel_histogram(ep[rgb_key(cam)])
                hists[cam] += hist
                stats[IMAGES + cam] = image_stats(hist, T)
            for name, a in arrays.items():
                values.setdefault(name, []).append(a)
            rows.append(row | {f"stats/{k}/{s}": v.tolist() for k, st in stats.items() for s, v in st.items()}
                        | {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            start += T
    finally:
        data.close()
        for video in videos.values():
            video.close()
    (root / EPISODES_PATH.format(chunk_index=0, file_index=0)).parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / EPISODES_PATH.format(chunk_index=0, file_index=0))
    _write_tasks(root, tasks)
    stats = {n: _shaped(vector_stats(np.concatenate(v)), v[0].shape[1:]) for n, v in values.items()}
    stats |= {IMAGES + cam: image_stats(hists[cam], start) for cam in cameras}
    _json(root / STATS_PATH, {k: {s: v.tolist() for s, v in st.items()} for k, st in stats.items()})
    robot = (store.attrs.get("imported") or {}).get("describe", {}).get("robot_type") or store.attrs.get("robot_type")
    _json(root / INFO_PATH, {
        "codebase_version": CODEBASE_VERSION, "fps": fps, "features": _features(store, columns, fps, codec, crf),
        "total_episodes": store.n_episodes, "total_frames": start, "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB,
        "data_path": DATA_PATH, "video_path": VIDEO_PATH if cameras else None, "robot_type": robot,
        "splits": {"train": f"0:{store.n_episodes}"}})


def export_lerobot(store: EpisodeStore | str | Path, out: str | Path, codec: str = "h264", fps: float | None = None,
                   crf: int = 30, task: str | None = None, progress: bool = True) -> Path:
    """Write the EpisodeStore ``store`` as a LeRobotDataset v3.0 at ``out`` (see the module docstring); returns ``out``.

    codec: ``h264`` (libx264) or ``av1`` (SVT-AV1, LeRobot's default); crf: quality (lower: better, larger; LeRobot's
    default 30); fps: frames per second [Hz] (default: the store's ``control_hz``); task: every episode's task (default:
    each episode's own ``task`` info, else the store's name). The dataset is written beside ``out`` and renamed into
    place when complete: an interrupted export leaves no ``out``.
    """
    store = store if isinstance(store, EpisodeStore) else EpisodeStore.open(store)
    out = Path(out)
    fps_int = _check_export(store, out, codec, fps, crf)
    partial = out.with_name(f".{out.name}.partial")
    if partial.exists():  # left by an interrupted export of the same name
        shutil.rmtree(partial)
    try:
        _write(store, partial, codec, fps_int, crf, task, progress)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(out)
    return out
