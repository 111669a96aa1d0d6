"""The training data of a BC run: windows of a feature cache's train/val episodes and the normalizer fit on
the training split."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s2robot.data.dataset import WindowDataset, split_episodes
from s2robot.data.episode import find_non_finite
from s2robot.data.features import open_feature_cache, open_views_cache
from s2robot.data.keys import ACTION_SPACES, EXECUTED_SUFFIX, episode_starts, feat_keys
from s2robot.data.normalize import Normalizer
from s2robot.data.store import EpisodeStore
from s2robot.data.views import ViewsConfig


@dataclass
class TrainData:
    train: WindowDataset
    val: WindowDataset | None
    normalizer: Normalizer
    shape: dict[str, Any]  # feature_dims, proprio_dim, action_dim
    cache_path: Path
    cache_attrs: dict[str, Any]
    cache_fingerprint: str = ""  # the cache store's fingerprint: a run records what it was trained on
    train_cube_xy: list[list[float]] | None = None  # (x, y) [m] of the training episodes' cubes, when recorded


def fit_normalizer(data: Mapping[str, np.ndarray], episode_ends: np.ndarray, train_episodes: np.ndarray,
                   feature_keys: tuple[str, ...], normalize_features: bool) -> Normalizer:
    """Gaussian statistics of proprio, action (and features) over the steps of the training episodes."""
    starts = episode_starts(episode_ends)
    rows = np.concatenate([np.arange(starts[e], episode_ends[e]) for e in train_episodes])
    keys = ["proprio", "action", *(feature_keys if normalize_features else ())]
    return Normalizer.fit({k: np.asarray(data[k])[rows] for k in keys})


def _shape(data: Mapping[str, np.ndarray], feature_keys: tuple[str, ...], cache_path: Path,
           expected: int | None) -> dict[str, Any]:
    shape = {"feature_dims": {k: int(data[k].shape[1]) for k in feature_keys},
             "proprio_dim": int(data["proprio"].shape[1]), "action_dim": int(data["action"].shape[1])}
    bad = {k: f for k, f in shape["feature_dims"].items() if expected is not None and f != expected}
    if bad:
        raise ValueError(f"feature cache {cache_path} holds features of width {bad} but its attrs say "
                         f"{expected}: the cache is corrupt; delete it and re-run")
    return shape


def check_finite(data: Mapping[str, np.ndarray], episode_ends: np.ndarray, source: Path) -> None:
    """Refuse non-finite values (NaN/inf), naming the key, episode and step: a NaN in a validation episode
    would train to the end with ``val/loss`` NaN and ``best`` stuck at an early step."""
    for k, v in data.items():
        if (found := find_non_finite(v, episode_ends)) is not None:
            n_bad, ep, step = found
            raise ValueError(f"{source}: {k} holds a non-finite value (NaN/inf) at episode {ep}, step {step} "
                             f"({n_bad} bad steps in all); rebuild the feature cache from a clean demo store "
                             "(python -m s2robot.workflows.store info DEMOS lists non-finite values)")


def check_digests(store: EpisodeStore, data: Mapping[str, np.ndarray], what: str) -> None:
    """Refuse a cache whose episodes, as read into ``data`` ({key: (T, ...)}, every key of ``store``), differ from
    the digests stored when they were cached: a deleted chunk reads back as zeros and would train silently."""
    ends = store.episode_ends
    for i, (a, b) in enumerate(zip(episode_starts(ends), ends, strict=True)):
        if not store.matches_digest(i, {k: v[a:b] for k, v in data.items()}):
            raise ValueError(f"{what} {store.path}, episode {i}: its arrays differ from the digest stored when it was "
                             "cached (deleted or edited chunks read back as other values); nothing was trained. Delete "
                             "it and train again to rebuild it (python -m s2robot.workflows.store verify "
                             f"{store.path} names what changed)")


def _read_all(store: EpisodeStore, keys: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """Every step of ``keys``; a chunk that does not decode is refused with the fix, not a codec traceback."""
    try:
        return {k: store.get_steps(k, 0, store.n_steps) for k in keys}
    except Exception as e:  # zarr and its codecs raise many kinds for a damaged chunk
        raise ValueError(f"{what} {store.path} does not read back ({type(e).__name__}: {e}); delete it and train "
                         f"again to rebuild it (python -m s2robot.workflows.store verify {store.path} names the "
                         "chunk)") from None


def select_action_space(data: Mapping[str, np.ndarray], action_space: str, source: Path) -> dict[str, np.ndarray]:
    """``data`` with the chosen action space's label/executed keys as ``action``/``action_executed`` (what the
    dataset, normalizer and policy read) and the other space's keys dropped."""
    label, executed = ACTION_SPACES[action_space]
    if label not in data:
        raise ValueError(f"{source} has no {label!r} key, which action_space={action_space} learns: its demos were "
                         f"recorded before s2robot stored {action_space} actions. Re-record them (record_demos.py), "
                         "or train with policy.action_space=delta")
    spaces = {k for pair in ACTION_SPACES.values() for k in pair}
    out = {k: v for k, v in data.items() if k not in spaces}
    out |= {"action": data[label], **({"action" + EXECUTED_SUFFIX: data[executed]} if executed in data else {})}
    return out


def load_training_data(cache_path: Path, fingerprint: str | None, t_obs: int, t_act: int,
                       normalize_features: bool, val_fraction: float, seed: int, batch_size: int,
                       action_space: str = "delta", views_path: Path | None = None,
                       views: ViewsConfig | None = None) -> TrainData:
    """Windows (To=t_obs, Ta=t_act) of the cache's train/val episodes and the normalizer of the train split; with
    ``views_path``, the training windows can read the shifted views stored there (``WindowDataset``'s views)."""
    cache = open_feature_cache(cache_path, fingerprint)
    if cache.n_episodes == 0:
        raise ValueError(f"feature cache {cache_path} holds no episodes: record demos first")
    data = _read_all(cache, cache.keys, "feature cache")
    check_finite(data, cache.episode_ends, Path(cache_path))  # names key, episode and step of a NaN
    check_digests(cache, data, "feature cache")
    data = select_action_space(data, action_space, Path(cache_path))
    feature_keys = feat_keys(data)
    train_ids, val_ids = split_episodes(cache.n_episodes, val_fraction, seed)
    view_data = None
    if views_path is not None and views is not None:
        if fingerprint is None:
            raise ValueError("shifted views are checked against the encoder fingerprint; none was given")
        store = open_views_cache(views_path, fingerprint, views, cache.attrs["source"]["fingerprint"],
                                 cache.n_episodes)
        view_data = _read_all(store, store.keys, "shifted views")  # {feat_<camera>: (T, n, F)}
        check_finite(view_data, store.episode_ends, Path(views_path))
        check_digests(store, view_data, "shifted views")
        view_data = {k: view_data[k] for k in feature_keys}
    train = WindowDataset(data, cache.episode_ends, train_ids, t_obs, t_act, views=view_data)
    val = WindowDataset(data, cache.episode_ends, val_ids, t_obs, t_act) if len(val_ids) else None
    if len(train) < batch_size:
        raise ValueError(f"only {len(train)} training windows ({len(train_ids)} episodes) for batch_size "
                         f"{batch_size}: record more demos or lower batch_size")
    normalizer = fit_normalizer(data, cache.episode_ends, train_ids, feature_keys, normalize_features)
    shape = _shape(data, feature_keys, Path(cache_path), cache.attrs.get("feature_dim"))
    cubes = [cache.episode_info(int(i)).get("cube_xy") for i in train_ids]  # the recorder's episode infos
    cube_xy = [[float(v) for v in xy] for xy in cubes] if cubes and all(xy is not None for xy in cubes) else None
    return TrainData(train, val, normalizer, shape, Path(cache_path), dict(cache.attrs), cache.fingerprint, cube_xy)
