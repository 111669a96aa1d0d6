"""Another project's dataset (an ``EpisodeSource``: LeRobot, Diffusion Policy, robomimic) imported into an EpisodeStore
that ``scripts/train_bc.py demos=<store>`` trains on.

A ``KeyMap`` picks the source columns: ``proprio`` (T, P) float32 (columns concatenated), ``action`` (T, A) float32
(the same values also as ``target`` when they are absolute targets, the key training's default action space reads) and
``rgb_<camera>`` (T, S, S, 3) uint8, each frame centre-cropped to a square and resized to S (bilinear, antialiased).
The store's attrs record where it came from (``imported``: format, path, the source's ``describe()``, key map, action
space, frame transform), its ``cameras``, ``image_size`` and ``control_hz`` (the source's fps); each episode's info
its ``task`` and ``source_episode``. An imported store has no simulated env: ``sim_env_problem`` says so, for
evaluation to refuse.

Episodes are committed in batches by the store's crash-safe ``add_episodes``: an interrupted import resumes (the same
command appends only the missing episodes, once the store's recorded source and key map match), and a refused one
(NaN/inf, a frame of the wrong size) removes the store it created, so nothing half-written is left.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from s2robot.common.lock import writer_lock
from s2robot.data.keys import ACTION_SPACES, rgb_key
from s2robot.data.sources import EpisodeSource, KeyMap, SourceEpisode
from s2robot.data.store import EpisodeStore

# --format name -> (module, function): readers return an EpisodeSource, exporters write a store and return the path.
READERS = {"lerobot": ("s2robot.data.lerobot", "open_lerobot"),
           "diffusion_policy": ("s2robot.data.diffusion_policy", "open_diffusion_policy"),
           "robomimic": ("s2robot.data.robomimic", "open_robomimic")}
EXPORTERS = {"lerobot": ("s2robot.data.lerobot", "export_lerobot"),
             "diffusion_policy": ("s2robot.data.diffusion_policy", "export_diffusion_policy")}
# What a format's actions usually are (``--action-space`` default): robomimic's are delta end-effector poses (OSC_POSE).
ACTION_SPACE = {"lerobot": "absolute", "diffusion_policy": "absolute", "robomimic": "delta"}
RESIZE = "centre crop to square, then torch.nn.functional.interpolate bilinear antialias=True, rounded to uint8"
_COMMIT_BYTES, _COMMIT_EPISODES = 64 << 20, 32  # episodes buffered per add_episodes commit (at most)
_RESIZE_BATCH = 64  # frames resized at once [frames]


def _load(table: Mapping[str, tuple[str, str]], fmt: str, what: str) -> Callable[..., Any]:
    if fmt not in table:
        raise ValueError(f"unknown {what} format {fmt!r}: use one of {sorted(table)}")
    module, name = table[fmt]
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"format {fmt!r} is not available in this s2robot ({module}.{name}: {e})") from None


def open_source(fmt: str, path: str | Path) -> EpisodeSource:
    """The dataset at ``path`` in format ``fmt`` (``READERS``), opened for reading."""
    return _load(READERS, fmt, "import")(path)


def exporter(fmt: str) -> Callable[..., Path]:
    """The writer of format ``fmt`` (``EXPORTERS``): ``exporter(fmt)(store, out, **options) -> Path``."""
    return _load(EXPORTERS, fmt, "export")


def key_map_with(base: KeyMap, proprio: str | None = None, action: str | None = None,
                 cameras: Sequence[str] | None = None) -> KeyMap:
    """``base`` with the command line's choices: ``proprio`` "a,b" (concatenated in order), ``action`` "k", and
    ``cameras`` ["name=column", ...] (replacing the base's cameras; "none" for no camera)."""
    cams = dict(base.cameras)
    if cameras is not None:
        cams = {}
        for item in cameras:
            if item == "none":
                continue
            name, sep, column = item.partition("=")
            if not sep or not name or not column or "/" in name:
                raise ValueError(f"--camera {item!r}: write name=column, e.g. --camera front=observation.images.front")
            cams[name] = column
    return KeyMap(proprio=[p for p in proprio.split(",") if p] if proprio is not None else list(base.proprio),
                  action=action if action is not None else base.action, cameras=cams)


def key_map_for(source: EpisodeSource, proprio: str | None = None, action: str | None = None,
                cameras: Sequence[str] | None = None) -> KeyMap:
    """The source's default map with the command line's choices (``key_map_with``); when the format finds no default
    (a column it looks for is missing), the choices alone, once they name proprio and action."""
    try:
        base = source.default_map()
    except ValueError:
        if proprio is None or action is None:
            raise
        base = KeyMap(proprio=[], action="", cameras={})
    return key_map_with(base, proprio, action, cameras)


def check_key_map(source: EpisodeSource, key_map: KeyMap) -> None:
    """Refuse a map that reads a column the source does not have (naming it, the available columns with their
    per-step shapes and the flags that choose others), or that gives no proprio or action."""
    keys = source.keys()
    missing = [k for k in key_map.source_keys() if k and k not in keys]
    if missing or not key_map.proprio or not key_map.action:
        what = (f"has no column {missing}" if missing else "gives no proprio column" if not key_map.proprio
                else "gives no action column")
        listing = ", ".join(f"{k} {np.dtype(d).name}{list(s)}" for k, (d, s) in keys.items())
        raise ValueError(f"{source.path}: the key map {what}. Available columns (per-step dtype and shape): "
                         f"{listing}. Choose with --proprio a,b --action k --camera name=column")


def frame_transform(column: str, dtype: np.dtype, shape: tuple[int, ...], size: int) -> dict[str, Any]:
    """How ``column``'s frames (per-step ``shape``: (H, W, 3), or (3, H, W)) become (S, S, 3) uint8: the square crop
    box [top, left, side, side] in source pixels, the output size and the method; refuses what is not RGB."""
    if len(shape) != 3 or 3 not in (shape[-1], shape[0]):
        raise ValueError(f"camera column {column!r} has per-step shape {list(shape)}: expected RGB frames (H, W, 3) "
                         "or (3, H, W); map another column with --camera name=column, or --camera none")
    if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"camera column {column!r} has dtype {np.dtype(dtype).name}: expected uint8 frames, or "
                         "floats in [0, 1] or [0, 255]")
    layout = "HWC" if shape[-1] == 3 else "CHW"
    h, w = (shape[0], shape[1]) if layout == "HWC" else (shape[1], shape[2])
    side = min(h, w)
    return {"column": column, "source_size": [h, w], "layout": layout, "dtype": np.dtype(dtype).name,
            "crop": [(h - side) // 2, (w - side) // 2, side, side], "size": size,
            "method": RESIZE if side != size else "centre crop to square (no resize)"}


def value_scale(frames: np.ndarray, column: str) -> float:
    """What float frames are multiplied by to reach [0, 255]: 255 for [0, 1] values, 1 for [0, 255] ones."""
    if frames.dtype == np.uint8:
        return 1.0
    lo, hi = float(np.nanmin(frames)), float(np.nanmax(frames))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 255:
        raise ValueError(f"camera column {column!r} holds float values in [{lo}, {hi}]: expected [0, 1] or [0, 255]")
    return 255.0 if hi <= 1.0 else 1.0


def to_square(frames: np.ndarray, transform: Mapping[str, Any], scale: float) -> np.ndarray:
    """Frames (T, H, W, 3) or (T, 3, H, W) → (T, S, S, 3) uint8 as ``transform`` (``frame_transform``) says."""
    if transform["layout"] == "CHW":
        frames = frames.transpose(0, 2, 3, 1)
    top, left, side, _ = transform["crop"]
    frames = frames[:, top:top + side, left:left + side]  # (T, side, side, 3)
    size = transform["size"]
    if side == size and frames.dtype == np.uint8:
        return np.ascontiguousarray(frames)
    out = []
    for i in range(0, len(frames), _RESIZE_BATCH):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + _RESIZE_BATCH])).permute(0, 3, 1, 2).float() * scale
        if side != size:  # (B, 3, side, side) -> (B, 3, S, S)
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def _vectors(ep: SourceEpisode, columns: Sequence[str], where: str) -> np.ndarray:
    """Numeric columns of one episode as (T, sum of widths) float32; NaN/inf (or overflow of float32) refused naming
    the source episode, column and step."""
    parts = []
    for c in columns:
        x = np.asarray(ep.data[c])
        if x.dtype.kind not in "biuf" or x.ndim == 0:
            raise ValueError(f"{where}: column {c!r} holds {x.dtype} {list(x.shape)}, not numbers per step")
        x = x.reshape(len(x), -1).astype(np.float32)  # (T, D)
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise ValueError(f"{where}: column {c!r} holds NaN/inf at step {int(np.argmax(bad))} ({int(bad.sum())} "
                             "steps); nothing was imported. Clean or leave out that episode in the source")
        parts.append(x)
    return np.concatenate(parts, axis=1)


def convert_episode(ep: SourceEpisode, i: int, key_map: KeyMap, transforms: Mapping[str, Mapping[str, Any]],
                    where: str, action_space: str = "absolute") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Source episode ``i`` as store arrays (``proprio``, ``action``, ``target`` when ``action_space`` is absolute,
    ``rgb_<camera>``) and its info."""
    where = f"{where}, source episode {i}"
    data = {"proprio": _vectors(ep, key_map.proprio, where), "action": _vectors(ep, [key_map.action], where)}
    if action_space == "absolute":  # the key policy.action_space=absolute (the default) learns
        data[ACTION_SPACES["absolute"][0]] = data["action"]
    for cam, column in key_map.cameras.items():
        frames, tr = np.asarray(ep.data[column]), transforms[cam]
        want = (*tr["source_size"], 3) if tr["layout"] == "HWC" else (3, *tr["source_size"])
        if frames.shape[1:] != want or frames.dtype.name != tr["dtype"]:
            raise ValueError(f"{where}: camera column {column!r} has frames {frames.dtype.name} "
                             f"{list(frames.shape[1:])}, the dataset's others {tr['dtype']} {list(want)}")
        if tr["value_scale"] == 255.0 and frames.max() > 1.0:
            raise ValueError(f"{where}: camera column {column!r} holds values up to {frames.max()}, but the first "
                             "episode's were in [0, 1]: the dataset mixes value ranges")
        data[rgb_key(cam)] = to_square(frames, tr, tr["value_scale"])  # (T, S, S, 3) uint8
    lengths = {k: len(v) for k, v in data.items()}
    if len(set(lengths.values())) != 1 or min(lengths.values()) < 1:
        raise ValueError(f"{where}: columns have different or zero lengths {lengths}")
    info = {"source_episode": i, **({"task": ep.task} if ep.task is not None else {}),
            **({"source_info": dict(ep.info)} if ep.info else {})}
    return data, info


def _transforms(source: EpisodeSource, key_map: KeyMap, size: int, first: SourceEpisode) -> dict[str, Any]:
    keys = source.keys()
    out = {cam: frame_transform(col, *keys[col], size) for cam, col in key_map.cameras.items()}
    for cam, col in key_map.cameras.items():
        out[cam]["value_scale"] = value_scale(np.asarray(first.data[col]), col)
    return out


def _store_attrs(source: EpisodeSource, key_map: KeyMap, size: int, action_space: str,
                 transforms: Mapping[str, Any]) -> dict[str, Any]:
    describe = source.describe()
    imported = {"format": source.format, "path": str(Path(source.path).resolve()), "describe": describe,
                "key_map": asdict(key_map), "action_space": action_space, "transform": dict(transforms)}
    return {"imported": imported, "cameras": list(key_map.cameras), "image_size": size,
            "control_hz": describe.get("fps")}


def _resume_problems(store: EpisodeStore, source: EpisodeSource, key_map: KeyMap, size: int,
                     action_space: str) -> list[str]:
    """What differs between the import recorded in ``store`` and this one (empty: it may resume)."""
    was, keys = store.attrs["imported"], source.keys()
    now = {"format": source.format, "path": str(Path(source.path).resolve()), "key_map": asdict(key_map),
           "action_space": action_space}
    problems = [f"{k} ({was.get(k)} → {v})" for k, v in now.items() if was.get(k) != v]
    if store.attrs.get("image_size") != size:
        problems.append(f"image_size ({store.attrs.get('image_size')} → {size})")
    elif not problems:
        for cam, col in key_map.cameras.items():
            tr = frame_transform(col, *keys[col], size)
            if any(was["transform"].get(cam, {}).get(k) != v for k, v in tr.items()):
                problems.append(f"camera {cam} frames ({was['transform'].get(cam)} → {tr})")
    if store.n_episodes > len(source):
        problems.append(f"episodes (the store holds {store.n_episodes}, the source {len(source)})")
    return problems


def _existing(path: Path, source: EpisodeSource, key_map: KeyMap, size: int, action_space: str,
              overwrite: bool) -> EpisodeStore | None:
    """The store at ``path`` to resume (None: create one); refuses anything but an import of this source and map."""
    if not path.exists():
        return None
    try:
        store = EpisodeStore.open(path)
    except (ValueError, FileNotFoundError) as e:
        raise FileExistsError(f"{path} exists and is not an EpisodeStore ({e}); nothing was changed: pass another "
                              "--out") from None
    if "imported" not in store.attrs:
        raise FileExistsError(f"{path} is a demo store recorded by s2robot, not an import; nothing was changed: pass "
                              "another --out")
    if overwrite:
        return None
    problems = _resume_problems(store, source, key_map, size, action_space)
    if problems:
        raise ValueError(f"{path} holds an import that differs from this one: {'; '.join(problems)}. Nothing was "
                         "changed: pass another --out, or --overwrite to replace it")
    return EpisodeStore.open(path, mode="a")


def _append(store: EpisodeStore, source: EpisodeSource, convert: Callable[[SourceEpisode, int], tuple[Any, Any]],
            first: SourceEpisode | None, progress: bool, keys: list[str]) -> None:
    """Convert and commit the source's episodes (their ``keys`` columns) from ``store.n_episodes`` on, a batch per
    ``add_episodes``."""
    start = store.n_episodes
    batch: list[tuple[dict[str, np.ndarray], dict[str, Any]]] = []
    n_bytes = 0
    with tqdm(total=len(source), initial=start, unit="ep", desc=f"importing {store.path.name}",
              disable=not progress) as bar:
        for i in range(start, len(source)):
            episode = first if i == 0 and first is not None else source.episode(i, keys)
            data, info = convert(episode, i)
            batch.append((data, info))
            n_bytes += sum(v.nbytes for v in data.values())
            if n_bytes >= _COMMIT_BYTES or len(batch) >= _COMMIT_EPISODES or i == len(source) - 1:
                store.add_episodes(batch)
                bar.update(len(batch))
                batch, n_bytes = [], 0


def import_source(source: EpisodeSource, out: str | Path, key_map: KeyMap | None = None, image_size: int = 224,
                  action_space: str = "absolute", overwrite: bool = False, progress: bool = True) -> EpisodeStore:
    """Import every episode of ``source`` into the EpisodeStore at ``out`` (see the module docstring); returns it
    opened read-only.

    key_map: source columns to store keys (default ``source.default_map()``); image_size: S [px] of the square frames;
    action_space: what the source's actions are, ``absolute`` targets (LeRobot's and Diffusion Policy's usual; stored
    as ``action`` and as ``target``, the key ``policy.action_space=absolute`` trains on) or ``delta`` (``action``
    only); overwrite: replace an existing import at ``out`` (never anything else). An existing import of the same
    source and settings resumes; any other existing ``out`` is refused and left as it was.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be ≥ 1 [px], got {image_size}")
    if action_space not in ACTION_SPACES:
        raise ValueError(f"action_space must be one of {list(ACTION_SPACES)}, got {action_space!r}")
    if len(source) == 0:
        raise ValueError(f"{source.path} holds no episodes: nothing to import")
    key_map = key_map or source.default_map()
    check_key_map(source, key_map)
    path = Path(out)
    with writer_lock(path, "demo store"):
        store, first = _existing(path, source, key_map, image_size, action_space, overwrite), None
        created = store is None
        if store is None:
            first = source.episode(0, key_map.source_keys())
            transforms = _transforms(source, key_map, image_size, first)
            path.parent.mkdir(parents=True, exist_ok=True)
            attrs = _store_attrs(source, key_map, image_size, action_space, transforms)
            store = EpisodeStore.create(path, attrs=attrs, overwrite=overwrite)
        transforms = store.attrs["imported"]["transform"]
        where = f"{source.format} dataset {source.path}"
        try:
            _append(store, source, lambda ep, i: convert_episode(ep, i, key_map, transforms, where, action_space),
                    first, progress, key_map.source_keys())
        except (ValueError, FileNotFoundError) as e:
            if not created:  # the episodes committed before this run are kept: they matched the source
                raise
            shutil.rmtree(path, ignore_errors=True)  # a refused import leaves nothing; an interrupted one resumes
            raise type(e)(f"{e} ({path} was removed)") from None
        if store.attrs["imported"]["describe"] != (describe := source.describe()):  # the source grew since
            store.update_attrs({"imported": {**store.attrs["imported"], "describe": describe}})
    return EpisodeStore.open(path)


def sim_env_problem(attrs: Mapping[str, Any]) -> str | None:
    """Why a policy trained on a demo store with these attrs (or on a feature cache of it: its ``source.attrs``) cannot
    be evaluated in s2robot's simulated env: its demos were imported from another project's robot and scene; None for
    demos recorded in the simulation."""
    imported = attrs.get("imported") or ((attrs.get("source") or {}).get("attrs") or {}).get("imported")
    if not imported:
        return None
    return (f"its demos were imported from the {imported['format']} dataset {imported['path']}, recorded on another "
            "robot and scene than s2robot's simulated env, so a rollout there would not mean anything. Evaluate it on "
            "the robot the data came from, and judge training by its validation loss (runs/<name>/metrics.jsonl)")
