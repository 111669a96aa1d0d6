"""One episode's arrays on their way into an ``EpisodeStore``: validation, content digest, JSON-safe info; and
which existing store `overwrite` may replace."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def check_json(obj: Any, what: str) -> Any:
    """Round-trip `obj` through JSON so that what is stored is exactly what is later read back."""
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-serialisable (plain dicts/lists/str/int/float/bool), "
                         f"convert numpy values with .tolist(): {e}") from None


def _hash_key(h: Any, key: str, value: np.ndarray) -> None:
    arr = np.ascontiguousarray(value)
    h.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
    h.update(memoryview(arr).cast("B"))


def episode_digest(data: Mapping[str, np.ndarray]) -> str:
    """sha256 hex digest of one episode's arrays: for every key (sorted) its name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(data):
        _hash_key(h, key, data[key])
    return h.hexdigest()


def key_digests(data: Mapping[str, np.ndarray]) -> dict[str, str]:
    """{key: sha256 hex of its name, dtype, shape and bytes} of one episode: which key changed, where
    ``episode_digest`` (kept as the episode's identity, hashed into the store fingerprint) only says that one did."""
    digests = {}
    for key in sorted(data):
        h = hashlib.sha256()
        _hash_key(h, key, data[key])
        digests[key] = h.hexdigest()
    return digests


def validate_episode(data: Mapping[str, np.ndarray], specs: Mapping[str, tuple[np.dtype, tuple[int, ...]]]) -> int:
    """Check one episode {key: (T, ...)} against a store's {key: (dtype, per-step shape)} (empty: any keys);
    return its length T."""
    if not data:
        raise ValueError("episode data is empty: pass {key: (T, ...) array}")
    keys = tuple(specs)
    if keys and set(data) != set(keys):
        missing, unexpected = sorted(set(keys) - set(data)), sorted(set(data) - set(keys))
        raise ValueError(f"episode keys {sorted(data)} differ from the store's {list(keys)} "
                         f"(missing {missing}, unexpected {unexpected})")
    lengths = {k: np.shape(v)[0] if np.ndim(v) else 0 for k, v in data.items()}
    if len(set(lengths.values())) != 1 or min(lengths.values()) < 1:
        raise ValueError(f"all arrays of an episode must have the same length T >= 1, got {lengths}")
    for k, v in data.items():
        if not k or "/" in k or k.startswith("."):
            raise ValueError(f"invalid key {k!r}: use a non-empty name without '/' or a leading '.'")
        if not isinstance(v, np.ndarray):
            raise ValueError(f"{k}: expected a numpy array, got {type(v).__name__}")
        if keys:
            dtype, shape = specs[k]
            if v.dtype != dtype or v.shape[1:] != shape:
                raise ValueError(f"{k}: expected dtype {dtype} with per-step shape {shape}, got dtype "
                                 f"{v.dtype} shape {v.shape[1:]} (cast with .astype(np.{dtype}))")
        elif v.dtype.kind not in "biuf":
            raise ValueError(f"{k}: dtype {v.dtype} is not storable; use bool, int, uint or float")
        if (found := find_non_finite(v, np.array([len(v)]))) is not None:
            raise ValueError(f"{k}: non-finite value (NaN/inf) at step {found[2]} of the episode; nothing was "
                             "written")
    return next(iter(lengths.values()))


def episode_entry(data: Mapping[str, np.ndarray], info: Mapping[str, Any] | None,
                  specs: Mapping[str, tuple[np.dtype, tuple[int, ...]]]) -> dict[str, Any]:
    """Validate one episode (see ``validate_episode``) and its JSON-able info; its ``{"length", "digest",
    "key_digests", "info"}`` entry for the store's attrs."""
    T = validate_episode(data, specs)
    info = check_json(dict(info or {}), "episode info")
    if info.get("length", T) != T:
        raise ValueError(f"info['length'] = {info['length']} but the arrays have T = {T} steps")
    info.pop("length", None)
    return {"length": T, "digest": episode_digest(data), "key_digests": key_digests(data), "info": info}


def not_replaceable(path: Path, kind: str | None, store_format: str) -> str | None:
    """Why ``overwrite`` may not delete ``path`` to make a store of ``kind`` (None: it may). Only a store of
    ``store_format`` and of the same kind (its ``kind`` attr: none for demo stores, e.g. ``s2robot.FeatureCache``
    for caches) is replaced: never a folder of notes, nor a demo store by a feature cache."""
    def name(k: str | None) -> str:
        return k or "demo store"

    try:
        attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    except (OSError, ValueError, KeyError, TypeError):
        return "it is not an s2robot EpisodeStore (no readable zarr.json with a store's attrs)"
    if attrs.get("format") != store_format:
        return f"it is not an s2robot EpisodeStore (format {attrs.get('format')!r})"
    found = (attrs.get("user") or {}).get("kind")
    if found != kind:
        return f"it is a {name(found)}, not a {name(kind)}"
    return None


def find_non_finite(values: np.ndarray, episode_ends: np.ndarray) -> tuple[int, int, int] | None:
    """(bad steps, episode, step within it) of the first NaN/inf in a ``(T, ...)`` per-step array of a store whose
    episodes end at ``episode_ends``; None when every value is finite (or the array is not floating point)."""
    if not np.issubdtype(values.dtype, np.floating):
        return None
    bad = ~np.isfinite(np.asarray(values).reshape(len(values), -1)).all(axis=1)  # (T,)
    if not bad.any():
        return None
    t = int(np.argmax(bad))
    ep = int(np.searchsorted(episode_ends, t, side="right"))
    return int(bad.sum()), ep, t - (int(episode_ends[ep - 1]) if ep else 0)
