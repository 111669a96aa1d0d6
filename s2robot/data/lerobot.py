"""LeRobotDataset v3.0 read as an ``EpisodeSource`` (``open_lerobot``); the writer is ``data.lerobot_export``.

The layout, as LeRobot 0.6 writes it (read from its source, tag v0.6.0)::

    meta/info.json                               codebase_version "v3.0", fps, features, totals, path templates
    meta/stats.json                              per feature: min/max/mean/std/count/q01..q99 (images per channel)
    meta/tasks.parquet                           task (the pandas index) -> task_index
    meta/episodes/chunk-XXX/file-XXX.parquet     one row per episode: episode_index, tasks, length,
                                                 data/chunk_index, data/file_index, dataset_from_index/_to_index,
                                                 videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp},
                                                 stats/<key>/<stat>, meta/episodes/{chunk_index,file_index}
    data/chunk-XXX/file-XXX.parquet              many episodes' frames concatenated: one column per non-video
                                                 feature + timestamp, frame_index, episode_index, index, task_index
    videos/<key>/chunk-XXX/file-XXX.mp4          many episodes' frames of one camera concatenated; an episode is
                                                 the frames at from_timestamp + its rows' timestamps

Sources (LeRobot v0.6.0, ``src/lerobot/``): ``datasets/utils.py`` (DEFAULT_DATA_PATH, DEFAULT_VIDEO_PATH,
DEFAULT_EPISODES_PATH, DatasetInfo, update_chunk_file_indices), ``utils/constants.py`` (DEFAULT_FEATURES),
``datasets/dataset_metadata.py`` (CODEBASE_VERSION, save_episode, _flush_metadata_buffer),
``datasets/dataset_writer.py`` (add_frame: timestamp = frame_index / fps; save_episode; _save_episode_data;
_save_episode_video: from/to_timestamp), ``datasets/video_utils.py`` (encode_video_frames, decode_video_frames_pyav,
get_video_info), ``datasets/dataset_reader.py`` (_query_videos: from_timestamp + timestamp),
``datasets/compute_stats.py``, ``datasets/io_utils.py`` (write_tasks, load_episodes).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from s2robot.data.sources import KeyMap, SourceEpisode

CODEBASE_VERSION = "v3.0"  # dataset_metadata.py
INFO_PATH, STATS_PATH, TASKS_PATH = "meta/info.json", "meta/stats.json", "meta/tasks.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
# Per-frame columns LeRobot adds to every dataset (utils/constants.py DEFAULT_FEATURES), in its order.
DEFAULT_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                    "task_index": "int64"}
TOLERANCE_S = 1e-4  # LeRobotDataset's default tolerance_s between a query timestamp and the decoded frame's [s]
STATE, ACTION, IMAGES = "observation.state", "action", "observation.images."
_VISUAL = ("video", "image")


def _damaged(path: Path, what: str, error: BaseException | str) -> ValueError:
    why = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return ValueError(f"{path}: {what} ({why}); the LeRobot dataset is truncated or damaged: download or copy it again")


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A parquet file of the dataset; a missing, truncated or corrupt one is refused naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the LeRobot dataset is incomplete (its metadata names this "
                                "file); download or copy it again")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise _damaged(path, "not a readable parquet file", e) from None


def read_info(root: Path) -> dict[str, Any]:
    """``meta/info.json`` of a v3.0 dataset at ``root``; another version or something else is refused with the fix."""
    path = root / INFO_PATH
    if not root.is_dir():
        raise FileNotFoundError(f"no LeRobot dataset at {root}: the folder does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a LeRobot dataset: it has no {INFO_PATH} (pass the dataset's root "
                                "folder, the one holding meta/, data/ and videos/)")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise _damaged(path, "not readable JSON", e) from None
    version = str(info.get("codebase_version", "?"))
    if not version.startswith("v3."):
        raise ValueError(f"{root} is a LeRobot dataset of codebase_version {version}; this reader reads v3.x. Convert "
                         "it with LeRobot (python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=...)")
    for k in ("fps", "features"):
        if k not in info:
            raise _damaged(path, f"has no {k!r}", "LeRobot writes it in every info.json")
    return info


def frame_shape(feature: Mapping[str, Any]) -> tuple[int, int, int]:
    """(H, W, C) of an image/video feature, whose shape LeRobot stores as (H, W, C) or, by ``names``, (C, H, W)."""
    shape, names = list(feature["shape"]), feature.get("names") or []
    if list(names)[:1] == ["channels"]:
        shape = shape[1:] + shape[:1]
    return int(shape[0]), int(shape[1]), int(shape[2])


def _column(table: pa.Table, key: str, dtype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A numeric column (scalars, fixed-size or nested lists) as (T, *shape) ``dtype``."""
    col = table.column(key).combine_chunks()
    if col.null_count:
        raise ValueError(f"{where}: column {key!r} has {col.null_count} missing values")
    while pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        col = col.flatten()
    values = np.asarray(col.to_numpy(zero_copy_only=False))
    try:
        return values.reshape(len(table), *shape).astype(dtype, copy=False)
    except ValueError:
        raise ValueError(f"{where}: column {key!r} holds {values.size} values for {len(table)} frames, not the "
                         f"shape {list(shape)} its info.json feature says") from None


def _png_frames(table: pa.Table, key: str, where: str) -> np.ndarray:
    """An ``image`` feature (the ``datasets.Image`` struct of PNG ``bytes`` and ``path``) as (T, H, W, 3) uint8."""
    from PIL import Image

    frames = []
    for t, cell in enumerate(table.column(key).to_pylist()):
        data = (cell or {}).get("bytes")
        if not data:
            path = cell and cell.get("path")
            raise ValueError(f"{where}: image {key!r} of frame {t} has no embedded bytes (path {path}); only "
                             "datasets with images embedded in the parquet files are read")
        with Image.open(io.BytesIO(data)) as image:
            frames.append(np.asarray(image.convert("RGB")))
    return np.stack(frames)


def decode_episode_video(path: Path, from_ts: float, timestamps: np.ndarray, fps: float, where: str) -> np.ndarray:
    """The frames of one episode in a concatenated mp4: those at ``from_ts + timestamps`` [s] (LeRobot's
    ``_query_videos``), as (T, H, W, 3) uint8. Decodes from the keyframe before ``from_ts`` on; a file holding fewer or
    more frames in the episode's span than it has rows, or frames off its timestamps, is refused with the counts."""
    import av

    if not path.is_file():
        raise FileNotFoundError(f"{where}: video {path} does not exist; the LeRobot dataset is incomplete")
    half = 0.5 / fps
    first, last = from_ts + float(timestamps[0]), from_ts + float(timestamps[-1])
    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(max(0, round(first / stream.time_base) - 1), backward=True, any_frame=False, stream=stream)
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else None
                if t is None or t < first - half:
                    continue
                if t > last + half:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))  # (H, W, 3)
                times.append(t)
    except (av.error.FFmpegError, IndexError) as e:
        raise _damaged(path, f"video does not decode ({where})", e) from None
    if len(frames) != len(timestamps):
        raise ValueError(f"{path}: holds {len(frames)} frames in [{first:.4f}, {last:.4f}] s but {where} has "
                         f"{len(timestamps)} steps: the video is truncated or does not match the dataset's index")
    off = np.abs(np.asarray(times) - (from_ts + timestamps.astype(np.float64)))
    if off.max() >= TOLERANCE_S:
        t = int(np.argmax(off))
        raise ValueError(f"{path}: frame {t} of {where} is at {times[t]:.5f} s, {off[t]:.5f} s off its timestamp "
                         f"(tolerance {TOLERANCE_S} s): the video and the parquet index are out of sync")
    return np.stack(frames)


class LeRobotSource:
    """A LeRobotDataset v3.0 on disk as an ``EpisodeSource`` (see the module docstring for the layout).

    Columns are the dataset's features: numeric ones (e.g. ``observation.state`` (T, P) float32, ``action``), and
    every RGB ``video`` or ``image`` feature as (T, H, W, 3) uint8; depth videos and string features are left out.
    """

    format = "lerobot"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.info = read_info(self.path)
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self._episodes = self._read_episodes()
        self._tasks = self._read_tasks()
        self._table: tuple[Path, pa.Table] | None = None  # the last data file read: episodes share files

    def _read_episodes(self) -> list[dict[str, Any]]:
        files = sorted((self.path / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise FileNotFoundError(f"{self.path} has no meta/episodes/chunk-*/file-*.parquet: the LeRobot dataset is "
                                    "incomplete; download or copy it again")
        rows = []
        for f in files:
            table = read_parquet(f)
            rows += table.select([n for n in table.column_names if not n.startswith("stats/")]).to_pylist()
        return sorted(rows, key=lambda r: r["episode_index"])

    def _read_tasks(self) -> dict[int, str]:
        if not (self.path / TASKS_PATH).is_file():
            return {}
        table = read_parquet(self.path / TASKS_PATH)
        name = "task" if "task" in table.column_names else "__index_level_0__"
        if name not in table.column_names or "task_index" not in table.column_names:
            raise _damaged(self.path / TASKS_PATH, f"has columns {table.column_names}", "expected task and task_index")
        return dict(zip(table.column("task_index").to_pylist(), table.column(name).to_pylist(), strict=True))

    def __len__(self) -> int:
        return len(self._episodes)

    def _is_camera(self, key: str) -> bool:
        ft = self.features[key]
        return ft["dtype"] in _VISUAL and not (ft.get("info") or {}).get("is_depth_map") and frame_shape(ft)[2] == 3

    def keys(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """{column: (dtype, per-step shape)}: numeric features, and RGB cameras as (H, W, 3) uint8."""
        out = {}
        for k, ft in self.features.items():
            if k in DEFAULT_FEATURES:
                continue
            if self._is_camera(k):
                out[k] = (np.dtype(np.uint8), frame_shape(ft))
            elif ft["dtype"] not in (*_VISUAL, "string", "language"):
                out[k] = (np.dtype(ft["dtype"]), tuple(int(s) for s in ft["shape"]))
        return out

    def default_map(self) -> KeyMap:
        """``observation.state`` → proprio, ``action`` → action, every RGB camera → its name (the last dotted part)."""
        cams = [k for k in self.keys() if self._is_camera(k)]
        names = [k.rsplit(".", 1)[-1] for k in cams]
        if len(set(names)) < len(names):  # two cameras of one name: keep what follows "observation.images."
            names = [k.removeprefix(IMAGES).replace(".", "_") for k in cams]
        return KeyMap(proprio=[STATE] if STATE in self.features else [], action=ACTION if ACTION in self.features
                      else "", cameras=dict(zip(names, cams, strict=True)))

    def describe(self) -> dict[str, Any]:
        keep = ("codebase_version", "robot_type", "fps", "total_episodes", "total_frames", "total_tasks")
        return {"format": self.format, "path": str(self.path.resolve()), **{k: self.info.get(k) for k in keep},
                "features": {k: {"dtype": ft["dtype"], "shape": list(ft["shape"])} for k, ft in self.features.items()}}

    def _data(self, row: Mapping[str, Any]) -> pa.Table:
        rel = self.info.get("data_path", DATA_PATH).format(chunk_index=row["data/chunk_index"],
                                                           file_index=row["data/file_index"])
        if self._table is None or self._table[0] != self.path / rel:
            self._table = (self.path / rel, read_parquet(self.path / rel))
        return self._table[1]

    def _rows(self, i: int) -> tuple[pa.Table, str]:
        row = self._episodes[i]
        ep, where = row["episode_index"], f"episode {row['episode_index']}"
        table = self._data(row)
        if "episode_index" not in table.column_names:
            raise _damaged(self._table[0], "has no episode_index column", "LeRobot writes one per frame")
        eps = table.column("episode_index").to_numpy()
        rows = table.take(np.flatnonzero(eps == ep))
        if len(rows) != row["length"]:
            raise ValueError(f"{self._table[0]}: holds {len(rows)} frames of {where}, meta/episodes says "
                             f"{row['length']}: the dataset is damaged; download or copy it again")
        return rows, where

    def episode(self, i: int, keys: Sequence[str] | None = None) -> SourceEpisode:
        """Episode ``i`` (in episode_index order): its ``keys`` columns (default every ``keys()`` column), its task
        and LeRobot episode index."""
        rows, where = self._rows(i)
        row = self._episodes[i]
        data = {}
        for k, (dtype, shape) in self.keys().items():
            if keys is not None and k not in keys:
                continue
            if self.features[k]["dtype"] == "video":
                rel = self.info["video_path"].format(video_key=k, chunk_index=row[f"videos/{k}/chunk_index"],
                                                     file_index=row[f"videos/{k}/file_index"])
                data[k] = decode_episode_video(self.path / rel, float(row[f"videos/{k}/from_timestamp"]),
                                               _column(rows, "timestamp", "float64", (), where), self.fps, where)
            elif self.features[k]["dtype"] == "image":
                data[k] = _png_frames(rows, k, f"{self._table[0]}, {where}")
            else:
                data[k] = _column(rows, k, dtype.str, shape, f"{self._table[0]}, {where}")
        task_ids = rows.column("task_index").to_pylist() if "task_index" in rows.column_names else []
        tasks = list(dict.fromkeys(self._tasks.get(t, str(t)) for t in task_ids)) or list(row.get("tasks") or [])
        info = {"episode_index": row["episode_index"], **({"tasks": tasks} if len(tasks) > 1 else {})}
        return SourceEpisode(data=data, task=tasks[0] if tasks else None, info=info)


def open_lerobot(path: str | Path) -> LeRobotSource:
    """Open the LeRobotDataset v3.0 at ``path`` (its root: meta/, data/, videos/) for reading."""
    return LeRobotSource(path)


def export_lerobot(store: Any, out: str | Path, codec: str = "h264", fps: float | None = None, crf: int = 30,
                   task: str | None = None, progress: bool = True) -> Path:
    """Write an EpisodeStore as a LeRobotDataset v3.0 at ``out``; see ``data.lerobot_export.export_lerobot``."""
    from s2robot.data.lerobot_export import export_lerobot as export

    return export(store, out, codec=codec, fps=fps, crf=crf, task=task, progress=progress)
