"""robomimic's hdf5 datasets as an episode source.

The layout, as robomimic's ``docs/datasets/overview.md`` describes it and ``robomimic/scripts/dataset_states_to_obs.py``
writes it (ARISE-Initiative/robomimic)::

    data/                      attrs: total (steps over all demos), env_args (JSON string)
      demo_<k>/                attrs: num_samples (T), model_file (MJCF, robosuite only), ep_meta (JSON, optional)
        actions                (T, A)
        rewards, dones         (T,)
        states                 (T, S) simulator states (empty or dummy outside robosuite)
        obs/<key>              (T, ...) e.g. robot0_eef_pos (T, 3), agentview_image (T, 84, 84, 3) uint8
        next_obs/<key>         (T, ...) obs shifted by one step (not read)
    mask/<filter key>          (n,) bytes: demo names of a named subset (``robomimic/scripts/split_train_val.py``)

Episodes are the demos (or those of one filter key) in the order of the integer in ``demo_<k>``, as
``robomimic/utils/dataset.py`` (``SequenceDataset.load_demo_info``) sorts them. Columns are the obs keys, un-prefixed,
plus the per-step datasets beside ``actions`` (``rewards``, ``dones``, ``states``, ``actions_abs``, ...); one whose
length differs from ``actions`` in some demo (dummy ``states``) is skipped and listed in ``describe()["skipped"]``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s2robot.data.sources import KeyMap, SourceEpisode

FORMAT = "robomimic"
# robomimic's own proprioception in its image configs (``robomimic/exps/templates/*.json``, obs low_dim): 3 + 4 + 2
PROPRIO_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
PRIVILEGED_KEYS = ("object",)  # object poses: simulator state, never in a fallback proprio
IMAGE_SUFFIX = "_image"
_DEMO = re.compile(r"demo_(\d+)")
_MAX_ATTR_CHARS = 4096  # one demo attr (as JSON) larger than this is left out of infos and describe()
_MAX_SECTION_CHARS = 65_536  # env_args or the per-demo attrs (as JSON) larger than this are left out of describe()

Column = tuple[str, np.dtype, tuple[int, ...]]  # (path inside a demo group, dtype, per-step shape)


class RobomimicSource:
    """A robomimic hdf5 opened for reading; open one with `open_robomimic`. The file is reopened for every read."""

    format = FORMAT

    def __init__(self, path: Path, demos: Sequence[str], lengths: Sequence[int], columns: Mapping[str, Column],
                 meta: Mapping[str, Any]) -> None:
        """Internal: ``demos`` in order with their ``lengths``, ``columns`` {name: Column}, ``meta`` for describe."""
        self.path, self._demos, self._lengths = path, list(demos), list(lengths)
        self._columns, self._meta = dict(columns), dict(meta)

    def __len__(self) -> int:
        """E, the number of demos read (all, or those of the filter key)."""
        return len(self._demos)

    def keys(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """{column: (dtype, per-step shape)}: obs keys un-prefixed, ``actions``, ``rewards``, ..."""
        return {k: (dtype, shape) for k, (_, dtype, shape) in sorted(self._columns.items())}

    def episode(self, i: int, keys: Sequence[str] | None = None) -> SourceEpisode:
        """Demo ``i`` (in demo-number order): every column (or only ``keys``) as (T_i, ...) arrays as stored; its
        task is ``ep_meta["lang"]`` when the demo has one; info has the demo name and its attrs (no model_file)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode {i} out of range: {self.path} has {len(self)} demos")
        i %= len(self)
        names = sorted(self._columns) if keys is None else list(keys)
        unknown = sorted(set(names) - set(self._columns))
        if unknown:
            raise KeyError(f"{self.path} has no columns {unknown}; available: {sorted(self._columns)}")
        demo = self._demos[i]
        h5py = _h5py()
        with h5py.File(self.path, "r") as f:
            group = f[f"data/{demo}"]
            try:
                data = {k: np.asarray(group[self._columns[k][0]][()]) for k in names}
            except Exception as e:  # a damaged dataset: h5py raises OSError/KeyError/RuntimeError
                raise ValueError(f"{self.path}: cannot read data/{demo} ({type(e).__name__}: {e}); the file is "
                                 "damaged or was changed since it was opened") from None
            attrs = _demo_attrs(group.attrs)
        lengths = {k: len(v) for k, v in data.items() if len(v) != self._lengths[i]}
        if lengths:
            raise ValueError(f"{self.path}: data/{demo} changed since it was opened: {lengths} steps where "
                             f"actions had {self._lengths[i]}; open it again")
        lang = attrs.get("ep_meta", {}).get("lang") if isinstance(attrs.get("ep_meta"), dict) else None
        return SourceEpisode(data=data, task=lang if isinstance(lang, str) else None,
                             info={"demo": demo, **attrs})

    def default_map(self) -> KeyMap:
        """proprio: those of `PROPRIO_KEYS` present (in that order), else every float (T, D) obs key but ``object``
        (sorted); action: ``actions``; cameras: every ``<camera>_image`` obs key of (T, H, W, 3) uint8 frames."""
        obs = {k: (d, s) for k, (p, d, s) in self._columns.items() if p.startswith("obs/")}
        proprio = [k for k in PROPRIO_KEYS if k in obs]
        if not proprio:
            proprio = sorted(k for k, (d, s) in obs.items() if len(s) == 1 and np.issubdtype(d, np.floating)
                             and k not in PRIVILEGED_KEYS and not k.endswith(IMAGE_SUFFIX))
        cameras = {k.removesuffix(IMAGE_SUFFIX): k for k, (d, s) in sorted(obs.items())
                   if k.endswith(IMAGE_SUFFIX) and d == np.uint8 and len(s) == 3 and s[2] == 3}
        return KeyMap(proprio=proprio, action="actions", cameras=cameras)

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance: format, path, demo and step counts, fps (robosuite's ``control_freq``, or None), the
        filter key read, every filter key's size, env_args (parsed), ``data`` attr total, columns, skipped datasets
        and the demos' attrs (no model_file); env_args and the demos' attrs are left out when over 64 KiB of JSON."""
        columns = {k: {"dtype": d.str, "shape": list(s), "source": p} for k, (p, d, s) in sorted(self._columns.items())}
        return {"format": FORMAT, "path": str(self.path), "episodes": len(self), "steps": int(sum(self._lengths)),
                "columns": columns, **self._meta}


def open_robomimic(path: str | Path, filter_key: str | None = None) -> RobomimicSource:
    """Open the robomimic hdf5 at ``path`` for reading: every demo, or those listed under ``mask/<filter_key>``.

    Checked from the file's metadata before any episode is read: every demo is named ``demo_<k>`` and has
    ``actions``; ``num_samples`` (when present) and every obs key's length equal the length of ``actions``; every
    demo has the same obs keys, dtypes and per-step shapes. A ``data`` attr ``total`` that differs from the steps
    found gets a warning (robomimic itself never reads it).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no robomimic hdf5 at {path}: the file does not exist")
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not an hdf5 file ({e}); robomimic datasets are .hdf5 files") from None
    with f:
        if not isinstance(f.get("data"), h5py.Group):
            raise ValueError(f"{path} has no data group: not a robomimic dataset (data/demo_<k>/{{actions, obs/}})")
        demos = _demo_names(path, f, filter_key)
        lengths, columns, skipped = _scan_demos(path, f["data"], demos)
        meta = _file_meta(path, f, demos, filter_key)
    return RobomimicSource(path, demos, lengths, columns, {**meta, "skipped": skipped})


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError("reading robomimic datasets needs h5py: pip install 's2robot[interop]' "
                          "(or pip install h5py)") from None
    return h5py


def _demo_names(path: Path, f: Any, filter_key: str | None) -> list[str]:
    """The demos to read, sorted by the integer in ``demo_<k>`` as robomimic sorts them."""
    every = list(f["data"].keys())
    bad = [n for n in every if not _DEMO.fullmatch(n)]
    if bad:
        raise ValueError(f"{path}: data holds groups {bad[:5]} not named demo_<k>; robomimic names every "
                         "demonstration demo_<integer> (rename them, or rewrite the file with only the demos)")
    demos = every
    if filter_key is not None:
        masks = sorted(f["mask"].keys()) if "mask" in f else []
        if filter_key not in masks:
            raise ValueError(f"{path} has no filter key {filter_key!r}; its filter keys (mask/): {masks}")
        demos = [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(f[f"mask/{filter_key}"][()])]
        missing = sorted(set(demos) - set(every))
        if missing:
            raise ValueError(f"{path}: filter key mask/{filter_key} lists demos {missing[:5]} that are not under "
                             "data/; recreate the filter key (robomimic/scripts/split_train_val.py)")
    if not demos:
        raise ValueError(f"{path} has no demos" + (f" under filter key {filter_key!r}" if filter_key else "")
                         + ": nothing to import")
    return sorted(demos, key=lambda n: int(n[5:]))


def _demo_datasets(path: Path, group: Any, demo: str) -> tuple[int, dict[str, tuple[str, np.dtype, tuple[int, ...]]]]:
    """(T, {column: (path in the demo, dtype, (T_col, ...) full shape)}) of one demo; checks actions and obs."""
    where = f"{path}: data/{demo}"
    if "actions" not in group or not hasattr(group["actions"], "shape"):
        raise ValueError(f"{where} has no actions dataset; every robomimic demo holds actions (T, A) beside obs/ "
                         "(re-export the demo with its actions)")
    n = int(group["actions"].shape[0]) if group["actions"].ndim else -1
    num_samples = group.attrs.get("num_samples")
    if num_samples is not None and int(num_samples) != n:
        raise ValueError(f"{where}: attr num_samples = {int(num_samples)} but actions has {n} steps; robomimic "
                         "reads num_samples as the demo length, so the file is inconsistent: fix num_samples")
    found = {}
    for name, item in group.items():
        if hasattr(item, "shape"):  # a dataset beside actions; groups (next_obs, action_dict) are not read
            found[name] = (name, item.dtype, tuple(item.shape))
    obs = group.get("obs")
    for key, item in (obs.items() if obs is not None else []):
        if key in found:
            raise ValueError(f"{where}: obs/{key} has the name of a dataset beside actions; rename the obs key")
        if item.ndim == 0 or item.shape[0] != n:
            raise ValueError(f"{where}: obs/{key} has shape {item.shape} but actions has {n} steps; every obs key "
                             "holds one row per action")
        found[key] = (f"obs/{key}", item.dtype, tuple(item.shape))
    return n, found


def _scan_demos(path: Path, data: Any, demos: Sequence[str]) -> tuple[list[int], dict[str, Column], list[str]]:
    """(lengths, columns, skipped) over ``demos``: obs keys and actions must agree across demos; other datasets
    that are missing in some demo, differ in per-step shape or dtype, or are not one row per step are skipped."""
    lengths, columns, skipped = [], {}, {}
    for i, demo in enumerate(demos):
        n, found = _demo_datasets(path, data[demo], demo)
        lengths.append(n)
        specs = {k: (p, np.dtype(d), s[1:]) for k, (p, d, s) in found.items() if len(s) and s[0] == n}
        if i == 0:
            columns = specs
            skipped = {k: "not one row per step in data/" + demo for k in found if k not in specs}
        for k in list(columns):
            if specs.get(k) == columns[k]:
                continue
            if columns[k][0].startswith("obs/") or k == "actions":
                got = specs.get(k, ("missing",))[1:] or "missing"
                raise ValueError(f"{path}: data/{demo} column {k} is {got}, but data/{demos[0]} has "
                                 f"{columns[k][1:]}; every demo must hold the same obs keys with the same dtypes "
                                 "and per-step shapes")
            skipped[k] = f"missing or of another shape or length in data/{demo}"
            del columns[k]
        extra = sorted(k for k, (p, _, _) in specs.items() if k not in columns and p.startswith("obs/"))
        if extra and i:
            raise ValueError(f"{path}: data/{demo} has obs keys {extra} that data/{demos[0]} lacks; every demo "
                             "must hold the same obs keys")
    return lengths, columns, [f"{k} ({why})" for k, why in sorted(skipped.items())]


def _file_meta(path: Path, f: Any, demos: Sequence[str], filter_key: str | None) -> dict[str, Any]:
    """describe() entries from the file: env_args, total, filter keys and the demos' attrs."""
    data = f["data"]
    attrs = {k: _plain(v) for k, v in data.attrs.items()}
    total = attrs.get("total")
    steps = sum(int(g["actions"].shape[0]) for g in data.values() if "actions" in g)
    if total is not None and total != steps:
        warnings.warn(f"{path}: data attr total = {total} but its demos hold {steps} steps (demos removed or "
                      "added without updating it); reading the demos as they are", stacklevel=3)
    env_args = attrs.get("env_args")
    filter_keys = {k: int(v.shape[0]) for k, v in f["mask"].items()} if "mask" in f else {}
    per_demo = {d: _demo_attrs(data[d].attrs) for d in demos}
    kwargs = env_args.get("env_kwargs") if isinstance(env_args, dict) else None
    fps = kwargs.get("control_freq") if isinstance(kwargs, dict) else None  # robosuite's control rate [Hz]
    return {"fps": float(fps) if isinstance(fps, int | float) else None,
            "filter_key": filter_key, "filter_keys": filter_keys, "total": total,
            "env_args": _limited(env_args, _MAX_SECTION_CHARS), "demo_attrs": _limited(per_demo, _MAX_SECTION_CHARS)}


def _demo_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A demo group's attrs as JSON-able values, JSON strings parsed, without ``model_file`` (the MJCF model, tens of
    KiB per demo) and with any value over 4 KiB of JSON replaced by a note of its size."""
    return {k: _limited(_plain(v), _MAX_ATTR_CHARS) for k, v in sorted(attrs.items()) if k != "model_file"}


def _plain(value: Any) -> Any:
    """An hdf5 attr as a JSON-able value: numpy scalars and arrays as Python ones, bytes decoded, strings that hold
    a JSON object or array parsed."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return json.loads(json.dumps(value, default=str))


def _limited(value: Any, max_chars: int) -> Any:
    """``value`` when its JSON is at most ``max_chars`` long, else a note of its size."""
    n = len(json.dumps(value, default=str))
    return value if n <= max_chars else {"omitted": f"{n} characters of JSON"}
