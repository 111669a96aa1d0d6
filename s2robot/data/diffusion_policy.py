"""Diffusion Policy's zarr ReplayBuffer as an episode source, and an ``EpisodeStore`` exported as one.

The format, as ``diffusion_policy/common/replay_buffer.py`` (real-stanford/diffusion_policy) reads and writes it, is a
zarr **format 2** group, a folder (``DirectoryStore``) or a ``.zarr.zip`` (``ZipStore``)::

    data/<key>          (N, ...) every episode concatenated along axis 0 (N steps in all)
    meta/episode_ends   (E,) int64, exclusive end step of every episode, strictly increasing

Images are (N, H, W, 3): uint8 in the real-robot sets (``camera_<i>``, compressed with imagecodecs' Jpeg2k, one frame
per chunk: ``diffusion_policy/real_world/real_data_conversion.py``), float32 in 0..255 in PushT (``img``:
``diffusion_policy/dataset/pusht_image_dataset.py`` divides by 255). A reader hands every frame out as uint8.

Export keeps the store's key names (``proprio``, ``action``, ``rgb_<camera>``, ...), so reading the export back gives
the store's arrays bit for bit; a Diffusion Policy dataset class names them in its ``shape_meta``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr

from s2robot.data.keys import RGB_PREFIX
from s2robot.data.sources import KeyMap, SourceEpisode
from s2robot.data.store import EpisodeStore

FORMAT = "diffusion_policy"
# Proprioception columns a default map takes, the first one present: our own export, PushT (agent xy + block pose),
# the real-robot sets (``diffusion_policy/real_world/real_env.py``), the name PushT's dataset class gives state[:, :2].
PROPRIO_KEYS = ("proprio", "state", "robot_eef_pose", "agent_pos")
_NOT_PROPRIO = ("timestamp", "stage")  # per-step bookkeeping of the real-robot sets, never a robot state
_TARGET_CHUNK_BYTES = 2_000_000  # ``get_optimal_chunks``' target_chunk_bytes
_COPY_BYTES = 64 << 20  # export copies at most this many bytes of one key at a time
_MAX_ATTRS_CHARS = 65_536  # a source's attrs larger than this (as JSON) are left out of describe()
# ``ReplayBuffer.resolve_compressor('disk')``: Blosc zstd, level 5, bit shuffle
_DISK = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)


def is_image(dtype: np.dtype, step_shape: tuple[int, ...]) -> bool:
    """Whether a column of per-step ``step_shape`` and ``dtype`` holds camera frames: (H, W, 3), uint8 or float."""
    dtype = np.dtype(dtype)
    return (len(step_shape) == 3 and step_shape[2] == 3 and min(step_shape[:2]) >= 2
            and (dtype == np.uint8 or np.issubdtype(dtype, np.floating)))


class DiffusionPolicySource:
    """A Diffusion Policy ReplayBuffer opened for reading; open one with `open_diffusion_policy`."""

    format = FORMAT

    def __init__(self, path: Path, arrays: Mapping[str, zarr.Array], ends: np.ndarray,
                 docs: Mapping[str, dict[str, Any]], attrs: Mapping[str, Any]) -> None:
        """Internal: ``arrays`` are ``data/<key>``, ``ends`` (E,) int64 checked, ``docs`` their ``.zarray`` JSON."""
        self.path, self._arrays, self._ends = path, dict(arrays), ends
        self._docs, self._attrs = dict(docs), dict(attrs)

    def __len__(self) -> int:
        """E, the number of episodes."""
        return len(self._ends)

    def keys(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """{column: (dtype, per-step shape)}; camera frames are listed as uint8 whatever their stored dtype."""
        specs = {}
        for k, a in sorted(self._arrays.items()):
            dtype, shape = np.dtype(a.dtype), tuple(a.shape[1:])
            specs[k] = (np.dtype(np.uint8) if is_image(dtype, shape) else dtype, shape)
        return specs

    def episode(self, i: int, keys: Sequence[str] | None = None) -> SourceEpisode:
        """Episode ``i``: every column (or only ``keys``) as (T_i, ...) arrays, frames (T_i, H, W, 3) uint8."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode {i} out of range: {self.path} has {len(self)} episodes")
        i %= len(self)
        start, stop = (int(self._ends[i - 1]) if i else 0), int(self._ends[i])
        names = list(self._arrays) if keys is None else list(keys)
        unknown = sorted(set(names) - set(self._arrays))
        if unknown:
            raise KeyError(f"{self.path} has no data arrays {unknown}; available: {sorted(self._arrays)}")
        data = {}
        for k in names:
            try:
                value = self._arrays[k][start:stop]
            except Exception as e:  # blosc/imagecodecs raise many kinds for a damaged chunk
                raise ValueError(f"{self.path}: cannot read data/{k} steps [{start}, {stop}) of episode {i} "
                                 f"({type(e).__name__}: {e}); the chunk files are damaged or truncated") from None
            data[k] = self._frames(k, value, i) if is_image(value.dtype, value.shape[1:]) else value
        return SourceEpisode(data=data, info={"episode_index": i})

    def _frames(self, key: str, value: np.ndarray, i: int) -> np.ndarray:
        """(T, H, W, 3) uint8 frames of ``key``: uint8 as stored, floats (0..255, as PushT stores them) rounded."""
        if value.dtype == np.uint8:
            return value
        lo, hi = (float(value.min()), float(value.max())) if value.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 255.0):
            raise ValueError(f"{self.path}: data/{key} of episode {i} holds float frames in [{lo}, {hi}], outside "
                             "0..255 (Diffusion Policy stores float frames in 0..255, as PushT's img); rescale them "
                             "to 0..255 or map another column as this camera")
        return np.rint(value).astype(np.uint8)

    def default_map(self) -> KeyMap:
        """proprio: the first of `PROPRIO_KEYS` present, else every other float (T, D) column (sorted); action:
        ``action``; cameras: every (T, H, W, 3) column, named as its key (less a ``rgb_`` prefix)."""
        specs = self.keys()
        if "action" not in specs:
            raise ValueError(f"{self.path} has no data/action array (columns: {sorted(specs)}); pass a key map "
                             "(KeyMap) whose action names the action column")
        cameras = {k.removeprefix(RGB_PREFIX): k for k, (d, s) in specs.items() if is_image(d, s)}
        proprio = next(([k] for k in PROPRIO_KEYS if k in specs), None)
        if proprio is None:
            proprio = [k for k, (d, s) in specs.items() if len(s) == 1 and np.issubdtype(d, np.floating)
                       and "action" not in k and k not in _NOT_PROPRIO]
        return KeyMap(proprio=proprio, action="action", cameras=cameras)

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance: format, path, zarr format, episode and step counts, fps (or None), every array's
        dtype, shape, chunks and compressor, and the root attrs (left out when over 64 KiB of JSON)."""
        arrays = {k: {"dtype": np.dtype(a.dtype).str, "shape": list(a.shape), "chunks": list(a.chunks),
                      "compressor": (self._docs[k].get("compressor") or {}).get("id")}
                  for k, a in sorted(self._arrays.items())}
        attrs_json = json.dumps(self._attrs, default=str)
        attrs = (json.loads(attrs_json) if len(attrs_json) <= _MAX_ATTRS_CHARS
                 else {"omitted": f"{len(attrs_json)} characters of JSON"})
        return {"format": FORMAT, "path": str(self.path), "zarr_format": 2, "episodes": len(self),
                "steps": int(self._ends[-1]) if len(self._ends) else 0, "fps": self._fps(), "arrays": arrays,
                "attrs": attrs}

    def _fps(self) -> float | None:
        """Control rate [Hz]: the exporting store's ``control_hz``, else from the first episode's ``timestamp`` [s]
        (the real-robot sets record one per step), else None (PushT records none)."""
        exported = self._attrs.get("s2robot", {}).get("user", {}).get("control_hz")
        if isinstance(exported, int | float) and exported > 0:
            return float(exported)
        if "timestamp" not in self._arrays or not len(self) or self._ends[0] < 2:
            return None
        dt = float(np.median(np.diff(np.asarray(self._arrays["timestamp"][:int(self._ends[0])], dtype=np.float64))))
        return round(1.0 / dt, 6) if dt > 0 else None


def open_diffusion_policy(path: str | Path) -> DiffusionPolicySource:
    """Open the Diffusion Policy ReplayBuffer at ``path`` (a zarr format 2 folder or ``.zarr.zip``) for reading.

    Checked before any episode is read: the layout (``data/`` arrays, ``meta/episode_ends``), every array's codec
    (imagecodecs' are registered when it is installed), episode_ends strictly increasing, and every data array at
    least ``episode_ends[-1]`` steps long. Steps past the last episode end are ignored with a warning, as
    Diffusion Policy's ReplayBuffer ignores them.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no Diffusion Policy ReplayBuffer at {path}: the path does not exist")
    docs = _zarray_docs(path)
    for name, doc in docs.items():
        _check_codecs(path, name, doc)
    names = sorted(n.removeprefix("data/") for n in docs if n.startswith("data/"))
    try:
        store = zarr.storage.ZipStore(path, mode="r") if path.is_file() else str(path)
        root = zarr.open_group(store, mode="r", zarr_format=2)
        ends = np.asarray(root["meta/episode_ends"][:])
        arrays = {k: root[f"data/{k}"] for k in names}
    except Exception as e:  # a damaged .zgroup, .zarray or episode_ends chunk
        raise ValueError(f"{path}: cannot read its zarr metadata or meta/episode_ends ({type(e).__name__}: {e}); "
                         "the ReplayBuffer is damaged") from None
    ends = _checked_ends(path, ends)
    scalars = sorted(k for k, a in arrays.items() if a.ndim == 0)
    if scalars:
        raise ValueError(f"{path}: data arrays {scalars} are scalars; every data/<key> holds (N, ...) steps")
    _check_lengths(path, {k: a.shape[0] for k, a in arrays.items()}, int(ends[-1]) if len(ends) else 0)
    return DiffusionPolicySource(path, arrays, ends, {n.removeprefix("data/"): d for n, d in docs.items()},
                                 root.attrs.asdict())


def _zarray_docs(path: Path) -> dict[str, dict[str, Any]]:
    """{"data/<key>" | "meta/episode_ends": parsed ``.zarray``} of a ReplayBuffer folder or zip, read directly (zarr
    itself cannot even list an array whose codec is not installed)."""
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is a file but not a zip: a Diffusion Policy ReplayBuffer is a zarr folder "
                             "(DirectoryStore) or a .zarr.zip (ZipStore)")
        with zipfile.ZipFile(path) as z:
            files = {n: z.read(n) for n in z.namelist() if n.endswith((".zarray", ".zgroup")) or n == "zarr.json"}
    else:
        files = {str(p.relative_to(path)): p.read_bytes() for pattern in ("*/*/.zarray", "*/.zgroup", ".zgroup")
                 for p in path.glob(pattern)}
        if (path / "zarr.json").exists():
            files["zarr.json"] = b""
    if ".zgroup" not in files:
        fix = ("it is zarr format 3 (an s2robot EpisodeStore? open it with EpisodeStore.open)" if "zarr.json" in files
               else "no .zgroup at its root")
        raise ValueError(f"{path} is not a Diffusion Policy ReplayBuffer (a zarr format 2 group): {fix}")
    docs = {}
    for name, raw in files.items():
        parts = name.split("/")
        if len(parts) == 3 and parts[0] in ("data", "meta") and parts[2] == ".zarray":
            try:
                docs[f"{parts[0]}/{parts[1]}"] = json.loads(raw)
            except ValueError as e:
                raise ValueError(f"{path}: {name} is not valid JSON ({e}); the ReplayBuffer is damaged") from None
    if "meta/episode_ends" not in docs:
        raise ValueError(f"{path} has no meta/episode_ends array: not a Diffusion Policy ReplayBuffer, which holds "
                         "data/<key> arrays and meta/episode_ends (E,) int64 exclusive episode ends")
    if not any(n.startswith("data/") for n in docs):
        raise ValueError(f"{path} has no arrays under data/: a Diffusion Policy ReplayBuffer keeps one (N, ...) "
                         "array per key there")
    return docs


def _check_codecs(path: Path, name: str, doc: Mapping[str, Any]) -> None:
    """Refuse array ``name`` when its compressor or a filter is not installed, naming the package to install."""
    configs = [c for c in [doc.get("compressor"), *(doc.get("filters") or [])] if c]
    for config in configs:
        codec_id = config.get("id", "?")
        try:
            numcodecs.get_codec(dict(config))
            continue
        except ValueError:
            pass
        if codec_id.startswith("imagecodecs_"):
            try:
                import imagecodecs.numcodecs  # optional: only real-robot ReplayBuffers need it
            except ImportError:
                raise ValueError(f"{path}: array {name} is compressed with {codec_id!r}, which needs the "
                                 "imagecodecs package: pip install imagecodecs") from None
            imagecodecs.numcodecs.register_codecs(verbose=False)
            try:
                numcodecs.get_codec(dict(config))
                continue
            except ValueError:
                pass
        raise ValueError(f"{path}: array {name} uses codec {codec_id!r}, which no installed package provides; "
                         "install the numcodecs plugin that registers it (imagecodecs for imagecodecs_*)")


def _checked_ends(path: Path, ends: np.ndarray) -> np.ndarray:
    """(E,) int64 ``ends`` when 1-D, integer and strictly increasing from ≥ 1; a ValueError naming the fault else."""
    if ends.ndim != 1 or not np.issubdtype(ends.dtype, np.integer):
        raise ValueError(f"{path}: meta/episode_ends must be a 1-D integer array, got {ends.dtype} {ends.shape}")
    lengths = np.diff(ends, prepend=0)
    if len(ends) and lengths.min() < 1:
        bad = int(np.argmax(lengths < 1))
        raise ValueError(f"{path}: meta/episode_ends must be strictly increasing from ≥ 1 (every episode at least "
                         f"one step), but episode {bad} ends at {int(ends[bad])} after "
                         f"{int(ends[bad - 1]) if bad else 0}; the ReplayBuffer is damaged")
    return ends.astype(np.int64)


def _check_lengths(path: Path, lengths: Mapping[str, int], n_steps: int) -> None:
    """Refuse data arrays shorter than the ``n_steps`` that episode_ends covers; warn about steps past it."""
    short = {k: n for k, n in lengths.items() if n < n_steps}
    if short:
        raise ValueError(f"{path}: data arrays {short} hold fewer steps than meta/episode_ends covers ({n_steps}); "
                         f"array lengths: {dict(lengths)}. The ReplayBuffer was cut short: recopy it")
    extra = {k: n - n_steps for k, n in lengths.items() if n > n_steps}
    if extra:
        warnings.warn(f"{path}: ignoring steps past the last episode end ({n_steps}) in data arrays {extra} "
                      "(steps ignored), as Diffusion Policy's ReplayBuffer does", stacklevel=3)


# ---------------------------------------------------------------------------------------------------- export
def export_diffusion_policy(store: EpisodeStore, out: str | Path) -> Path:
    """Write every key of ``store`` as a Diffusion Policy ReplayBuffer folder at ``out``; return ``out``.

    The result is zarr format 2 (``.zgroup``/``.zarray`` files), which Diffusion Policy's own zarr 2 opens with
    ``ReplayBuffer.create_from_path`` or ``copy_from_path``: ``data/<key>`` keeps the store's key names and dtypes
    (``rgb_<camera>`` (N, S, S, 3) uint8 one frame per chunk; other keys chunked by ~2 MB of steps, as
    ``get_optimal_chunks`` does), all compressed with ``ReplayBuffer.resolve_compressor('disk')``;
    ``meta/episode_ends`` is (E,) int64 in one uncompressed chunk; the root attrs record the source store's path,
    fingerprint, user attrs and episode infos. It is written into a temporary folder beside ``out`` and renamed
    into place, so ``out`` never holds half an export; an existing ``out`` is never replaced.
    """
    out = Path(out).expanduser()
    if out.exists() or out.is_symlink():
        raise FileExistsError(f"{out} already exists; nothing was written: choose a new path (export never "
                              "replaces a folder)")
    if out.suffix == ".zip":
        raise ValueError(f"{out}: export writes a zarr folder, not a zip; drop the .zip suffix (zip the folder "
                         "afterwards with its files at the zip's root if you need a .zarr.zip)")
    if store.n_episodes == 0:
        raise ValueError(f"{store.path} has no episodes: Diffusion Policy's ReplayBuffer needs at least one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write_replay_buffer(store, tmp)
        if out.exists():
            raise FileExistsError(f"{out} appeared while exporting; nothing of it was replaced")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_replay_buffer(store: EpisodeStore, folder: Path) -> None:
    """Write the ReplayBuffer of ``store`` into the empty ``folder``."""
    root = zarr.open_group(str(folder), mode="w", zarr_format=2)
    data = root.create_group("data")
    n_steps = store.n_steps
    for key in store.keys:
        dtype, shape = store.spec(key)
        chunk_t = _chunk_length(dtype, shape, n_steps)
        arr = data.create_array(key, shape=(n_steps, *shape), chunks=(chunk_t, *shape), dtype=dtype,
                                compressors=_DISK, fill_value=0)
        step_bytes = max(1, dtype.itemsize * math.prod(shape))
        block = chunk_t * max(1, _COPY_BYTES // (chunk_t * step_bytes))  # whole chunks: none is written twice
        for start in range(0, n_steps, block):
            stop = min(n_steps, start + block)
            arr[start:stop] = store.get_steps(key, start, stop)
    ends = store.episode_ends  # (E,) int64
    meta = root.create_group("meta")
    meta.create_array("episode_ends", shape=ends.shape, chunks=ends.shape, dtype="int64", compressors=None,
                      fill_value=0)[:] = ends
    infos = [store.episode_info(i) for i in range(store.n_episodes)]
    root.attrs.update({"s2robot": {"source": str(store.path), "source_fingerprint": store.fingerprint,
                                   "user": dict(store.attrs), "episodes": infos}})


def _chunk_length(dtype: np.dtype, step_shape: tuple[int, ...], n_steps: int) -> int:
    """Steps per chunk: 1 for camera frames (random access to single frames, as Diffusion Policy's real-robot sets),
    else ~2 MB of steps (``get_optimal_chunks`` on (N, D) arrays), at most ``n_steps``."""
    if is_image(dtype, step_shape):
        return 1
    step_bytes = max(1, np.dtype(dtype).itemsize * math.prod(step_shape))
    return max(1, min(n_steps, math.ceil(_TARGET_CHUNK_BYTES / step_bytes)))
