"""Feature cache: frozen S² features of every frame of a demo store, computed once.

The encoder is frozen, so training never runs it: ``build_feature_cache`` encodes each camera's frames
(``rgb_<camera>``) into ``feat_<camera>`` float16 ``(T, F)`` and copies every other per-step key
(``proprio``, ``action``, ...) into a cache store with the same episode layout (an ``EpisodeStore``).

Cache key = (encoder fingerprint, source-store fingerprint), both in the cache's attrs. A re-run with the
same key is a no-op; a changed encoder lands in another file (the default path contains the encoder
fingerprint); a changed demo store makes the cache stale, which is reported and rebuilt, never reused.
An interrupted build resumes where it stopped: every episode is committed atomically by the store. Under torchrun
the ranks encode shares of the episodes and rank 0 merges them (``s2robot.data.sharded_cache``), bit for bit.

``slice_feature_cache`` makes a cache from another whose features contain the wanted ones as leading columns
(the ``cls`` readout is the first columns of ``cls+grid``), encoding no frame.

With ``views`` (``s2robot.data.views``) the same build encodes shifted views of every frame instead, into a store
of its own beside the cache: ``feat_<camera>`` (T, n, F) per episode, its ``views`` key in the attrs.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from s2robot.common.distributed import DistInfo, on_main
from s2robot.common.lock import writer_lock
from s2robot.data.episode_groups import Episode, EpisodeGroup, episode_groups, process_groups, read_group
from s2robot.data.keys import PRIVILEGED_CUBE, feat_key, is_rgb, rgb_cameras, rgb_key
from s2robot.data.sharded_cache import build_sharded, parts_dir
from s2robot.data.store import EpisodeStore
from s2robot.data.views import (
    ViewsConfig,
    paired_scene_steps,
    scene_store,
    shift_frames,
    view_offsets,
    views_cache_path,
)
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder, build_encoder, encoder_fingerprint, weights_digest
from s2robot.vision.oracle import ORACLE, OracleEncoder

Encoder = FrozenS2Encoder | OracleEncoder

KIND = "s2robot.FeatureCache"


def cameras_of(store: EpisodeStore) -> list[str]:
    """Camera names of a demo store: its ``rgb_<camera>`` keys."""
    return rgb_cameras(store.keys)


def _sources(store: EpisodeStore, encoder: Encoder) -> list[str]:
    """The cameras (feature names) ``encoder`` makes features of: the store's cameras, or the oracle's one."""
    if isinstance(encoder, OracleEncoder):
        if PRIVILEGED_CUBE not in store.keys:
            raise ValueError(f"{store.path} has no {PRIVILEGED_CUBE!r} key, which the oracle encoder reads: its demos "
                             "were recorded before s2robot stored the cube position; re-record them")
        return [ORACLE]
    cameras = cameras_of(store)
    if not cameras:
        raise ValueError(f"{store.path} has no camera frames (rgb_<camera> keys); keys: {list(store.keys)}")
    return cameras


def default_cache_path(demo_path: str | Path, encoder_fingerprint: str) -> Path:
    """``demos/<name>.zarr`` → ``demos/features/<name>-<encoder fingerprint>.zarr``."""
    name = Path(demo_path).name.removesuffix(".zarr")
    return Path(demo_path).parent / "features" / f"{name}-{encoder_fingerprint}.zarr"


def cache_key(store: EpisodeStore) -> tuple[str | None, str | None]:
    """(encoder fingerprint, source fingerprint) recorded in a cache store's attrs."""
    return store.attrs.get("encoder_fingerprint"), store.attrs.get("source", {}).get("fingerprint")


def _encode(encoder: FrozenS2Encoder, frames: np.ndarray, batch_size: int) -> np.ndarray:
    """Frames ``(T, S, S, 3)`` uint8 → float16 features ``(T, F)``, in batches."""
    x = torch.from_numpy(frames)
    n = len(x)
    if encoder.cfg.compile and n % batch_size:  # one batch shape, so the compiled ViT compiles once
        x = torch.cat([x, x[-1:].expand(batch_size - n % batch_size, *x.shape[1:])])
    if encoder.device.type == "cuda":
        x = x.pin_memory()  # page-locked: the host-to-GPU copy runs asynchronously
    out = [encoder(x[i : i + batch_size]).to(torch.float16) for i in range(0, len(x), batch_size)]
    return torch.cat(out)[:n].cpu().numpy()


def _open_existing(path: Path, key: tuple[str, str], views: ViewsConfig | None = None) -> EpisodeStore | None:
    """The cache at ``path`` if it has ``key`` (and the ``views``); None (after a warning) if it is stale or
    unreadable."""
    try:
        cache = EpisodeStore.open(path, mode="a")
    except ValueError as e:
        warnings.warn(f"feature cache {path} is unreadable ({e}); rebuilding it", stacklevel=3)
        return None
    found = cache_key(cache)
    same_views = cache.attrs.get("views") == (views.key() if views else None)
    if found == key and same_views:
        return cache
    what = "encoder" if found[0] != key[0] else "demo store" if found != key else "views config"
    was = (found, key) if found != key else (cache.attrs.get("views"), views.key() if views else None)
    warnings.warn(f"feature cache {path} is stale: the {what} changed ({was[0]}, now {was[1]}); rebuilding it",
                  stacklevel=3)
    return None


def build_feature_cache(
    demo_path: str | Path,
    encoder: Encoder,
    out: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = True,
    views: ViewsConfig | None = None,
    dist: DistInfo | None = None,
) -> Path:
    """Encode every frame of the demo store at ``demo_path``; returns the cache path (see module doc). With
    ``views`` (n ≥ 1), the shifted views of every frame instead (default path: ``views_cache_path`` of the cache's).

    Reading, encoding and writing overlap: a loader thread reads groups of whole episodes (≥ ``batch_size``
    steps) ahead, and each encoded group is committed (one ``add_episodes``) by a writer thread while the next
    group encodes. With ``dist`` of several torchrun processes, every rank calls this and encodes a share of the
    groups (``s2robot.data.sharded_cache``): the same cache, bit for bit.
    """
    source = EpisodeStore.open(demo_path)
    cameras = _sources(source, encoder)
    if source.n_episodes == 0:
        raise ValueError(f"{demo_path} holds no episodes; record demos first (scripts/record_demos.py)")
    views = views if views is not None and views.n else None
    if views is not None and isinstance(encoder, OracleEncoder):
        raise ValueError("shifted views are of camera frames; the oracle encoder reads no frames (set views.n=0)")
    key = (encoder.fingerprint, source.fingerprint)
    path = Path(out) if out is not None else default_cache_path(demo_path, key[0])
    if out is None and views is not None:
        path = views_cache_path(path, views)
    encode = _group_encoder(source, demo_path, encoder, cameras, batch_size, views)
    start = partial(_start, source, demo_path, encoder, path, key, views)
    frames_per_step = len(cameras) * (views.n if views else 1)
    if dist is not None and dist.world > 1:
        return build_sharded(source, path, start, encode, batch_size, dist, progress, frames_per_step)
    with writer_lock(path, "feature cache"):  # one builder of a cache at a time
        return _build(source, start(), encode, batch_size, progress, frames_per_step)


def _start(source: EpisodeStore, demo_path: str | Path, encoder: Encoder, path: Path, key: tuple[str, str],
           views: ViewsConfig | None) -> EpisodeStore:
    """The cache at ``path`` to append to: the existing one of this key (complete or not), else a new empty one."""
    cache = _open_existing(path, key, views) if path.exists() else None
    if cache is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        attrs = _cache_attrs(demo_path, source, encoder) | ({"views": views.key()} if views else {})
        cache = EpisodeStore.create(path, attrs=attrs, overwrite=True)
    return cache


def _group_encoder(source: EpisodeStore, demo_path: str | Path, encoder: Encoder, cameras: list[str],
                   batch_size: int, views: ViewsConfig | None) -> Callable[[EpisodeGroup], list[Episode]]:
    """A group of the demos' episodes → its cache episodes: features (or shifted views of them) and the rest."""
    if views is None:
        return partial(_encode_episodes, source=source, encoder=encoder, cameras=cameras, batch_size=batch_size)
    scenes = scene_store(views.scenes) if views.scenes is not None else None
    if scenes is not None and scenes.n_episodes != source.n_episodes:
        raise ValueError(f"the scene store {views.scenes} holds {scenes.n_episodes} episodes, the demos {demo_path} "
                         f"{source.n_episodes}: record it to the same count (it resumes) with the demos' seeds")
    return partial(_encode_views, source=source, encoder=encoder, cameras=cameras, batch_size=batch_size,
                   views=views, scenes=scenes)


def _build(source: EpisodeStore, cache: EpisodeStore, encode: Callable[[EpisodeGroup], list[Episode]],
           batch_size: int, progress: bool, frames_per_step: int) -> Path:
    """Encode the demos' episodes past the ones ``cache`` holds into it, in this process."""
    start = cache.n_episodes
    if start == source.n_episodes:
        return cache.path  # same key, complete: nothing to do
    todo = (source.n_steps - (int(source.episode_ends[start - 1]) if start else 0)) * frames_per_step  # frames
    bar = tqdm(total=todo, unit="frame", desc=f"caching {cache.path.name}", disable=not progress)
    if start:
        bar.write(f"resuming {cache.path}: {start}/{source.n_episodes} episodes already cached")
    t0 = time.perf_counter()
    process_groups(source, episode_groups(source.episode_ends, start, batch_size), encode, cache.add_episodes,
                   lambda group: bar.update(group.bounds[-1][1] * frames_per_step))
    bar.close()
    shutil.rmtree(parts_dir(cache.path), ignore_errors=True)  # left by a torchrun build: the cache is complete now
    if progress and todo:
        print(f"cached {todo} frames at {todo / (time.perf_counter() - t0):.1f} frames/s into {cache.path}")
    return cache.path


def _encode_episodes(group: EpisodeGroup, source: EpisodeStore, encoder: Encoder, cameras: list[str],
                     batch_size: int) -> list[Episode]:
    """Encode the frames of a group's episodes in shared batches: ``(cache episode, info)`` per episode."""
    if isinstance(encoder, OracleEncoder):  # privileged state, keyed by each episode's seed (see vision.oracle)
        feats = {ORACLE: np.concatenate([
            encoder.features(ep[PRIVILEGED_CUBE], ep["proprio"], [source.episode_info(i).get("seed", i)] * (b - a))
            for (i, ep), (a, b) in zip(group, group.bounds, strict=True)]).astype(np.float16)}
    else:
        feats = {cam: _encode(encoder, group.data[rgb_key(cam)], batch_size) for cam in cameras}  # (sum T, F) each
    episodes = []
    for (i, ep), (a, b) in zip(group, group.bounds, strict=True):
        data = {k: v for k, v in ep.items() if not is_rgb(k)}
        data |= {feat_key(cam): feats[cam][a:b] for cam in cameras}
        episodes.append((data, source.episode_info(i)))
    return episodes


def _encode_views(group: EpisodeGroup, source: EpisodeStore, encoder: FrozenS2Encoder, cameras: list[str],
                  batch_size: int, views: ViewsConfig, scenes: EpisodeStore | None = None) -> list[Episode]:
    """The ``views.n`` shifted views of a group's frames (of the same episodes in ``scenes``, when given), encoded:
    ``({feat_<camera>: (T, n, F)}, info)`` per episode."""
    offsets = [view_offsets(views, i) for i, _ in group]  # (n, 2) per episode
    feats: dict[str, np.ndarray] = {}
    for cam in cameras:
        frames = (group.data[rgb_key(cam)] if scenes is None  # (sum T, S, S, 3)
                  else np.concatenate([paired_scene_steps(scenes, source, i, rgb_key(cam)) for i, _ in group]))
        per_view = [_encode(encoder, np.concatenate([shift_frames(frames[a:b], *off[k])
                                                     for (a, b), off in zip(group.bounds, offsets, strict=True)]),
                            batch_size) for k in range(views.n)]  # n × (sum T, F)
        feats[cam] = np.stack(per_view, axis=1)  # (sum T, n, F)
    return [({feat_key(cam): feats[cam][a:b] for cam in cameras}, source.episode_info(i))
            for (i, _), (a, b) in zip(group, group.bounds, strict=True)]


def slice_feature_cache(superset: str | Path, demo_path: str | Path, encoder: Encoder, out: str | Path | None = None,
                        progress: bool = True) -> Path:
    """The cache of ``encoder`` for the demos at ``demo_path``, cut from the complete, current cache ``superset`` whose
    features start with this encoder's (columns ``[0, encoder.feature_dim)`` of every ``feat_<camera>``).

    The caller vouches that the columns are the same features (``workflows.cache`` does this for ``cls`` from
    ``cls+grid`` of the same encoder); this checks that the superset is complete for the same demo store.
    """
    source = EpisodeStore.open(demo_path)
    cameras = _sources(source, encoder)
    big = open_feature_cache(superset)
    if big.attrs["source"]["fingerprint"] != source.fingerprint or big.n_episodes != source.n_episodes:
        raise ValueError(f"feature cache {superset} is not a complete cache of {demo_path} as it is now "
                         f"({big.n_episodes}/{source.n_episodes} episodes); build it first, or build this cache")
    if int(big.attrs["feature_dim"]) < encoder.feature_dim:
        raise ValueError(f"feature cache {superset} has {big.attrs['feature_dim']}-D features; cannot cut "
                         f"{encoder.feature_dim}-D ones from it")
    key = (encoder.fingerprint, source.fingerprint)
    path = Path(out) if out is not None else default_cache_path(demo_path, key[0])
    with writer_lock(path, "feature cache"):
        cache = _open_existing(path, key) if path.exists() else None
        if cache is not None and cache.n_episodes == source.n_episodes:
            return path
        if cache is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            cache = EpisodeStore.create(path, attrs=_cache_attrs(demo_path, source, encoder), overwrite=True)
        start = cache.n_episodes
        groups = episode_groups(big.episode_ends, start, 1024)
        feats = {feat_key(c) for c in cameras}
        for group in tqdm(groups, desc=f"cutting {path.name} from {Path(superset).name}", disable=not progress):
            episodes = []
            for i, ep in read_group(big, group):
                data = {k: v[:, : encoder.feature_dim] if k in feats else v for k, v in ep.items()}
                episodes.append((data, big.episode_info(i)))
            cache.add_episodes(episodes)
    if progress:
        print(f"cut {encoder.feature_dim}-D features of {source.n_episodes} episodes from {superset} into {path} "
              "(no frame encoded)")
    return path


def _cache_attrs(demo_path: str | Path, source: EpisodeStore, encoder: Encoder) -> dict[str, Any]:
    return {"kind": KIND, "encoder_fingerprint": encoder.fingerprint, "encoder": encoder.describe(),
            "weights_random": encoder.weights.is_random, "privileged": isinstance(encoder, OracleEncoder),
            "cameras": _sources(source, encoder), "feature_dim": encoder.feature_dim,
            "source": {"path": str(Path(demo_path).resolve()), "fingerprint": source.fingerprint,
                       "n_episodes": source.n_episodes, "attrs": dict(source.attrs)}}


def open_views_cache(path: str | Path, encoder_fingerprint: str, views: ViewsConfig, source_fingerprint: str,
                     n_episodes: int) -> EpisodeStore:
    """Open the shifted views of a feature cache read-only; refuse views of another encoder, views config or demo
    store, or an incomplete build."""
    store = EpisodeStore.open(path)
    found = (store.attrs.get("kind"), cache_key(store), store.attrs.get("views"), store.n_episodes)
    want = (KIND, (encoder_fingerprint, source_fingerprint), views.key(), n_episodes)
    if found != want:
        raise ValueError(f"{path} is not the complete set of shifted views {views.key()} of encoder "
                         f"{encoder_fingerprint} for these demos (found kind, key, views, episodes {found}, want "
                         f"{want}); delete it and train again to rebuild it")
    return store


def open_feature_cache(path: str | Path, encoder_fingerprint: str | None = None) -> EpisodeStore:
    """Open a cache read-only; refuse one made by another encoder than ``encoder_fingerprint``."""
    cache = EpisodeStore.open(path)
    if cache.attrs.get("kind") != KIND:
        raise ValueError(f"{path} is an EpisodeStore but not a feature cache; build one with "
                         "scripts/cache_features.py")
    if cache.attrs.get("views"):
        raise ValueError(f"{path} holds shifted views ({cache.attrs['views']}), not a feature cache: train from the "
                         "cache beside it (the same name without -views…)")
    found = cache_key(cache)[0]
    if encoder_fingerprint is not None and found != encoder_fingerprint:
        raise ValueError(
            f"feature cache {path} was made by encoder {found}, not {encoder_fingerprint} (the configured "
            "encoder); rebuild it with scripts/cache_features.py for this encoder"
        )
    return cache


# ------------------------------------------------------------------------------------ open or build: one decision
def cache_location(demos: str | Path, out: str | Path | None, encoder: EncoderConfig) -> tuple[Path, str]:
    """(path, encoder fingerprint) of the feature cache of (demos, encoder): ``out``, or the default path keyed by the
    fingerprint. Refuses when neither the demo store nor a cache at ``out`` exists (no rank builds then)."""
    if not Path(demos).exists() and not (out and Path(out).exists()):
        raise FileNotFoundError(f"demo store {demos} does not exist; record demos first with "
                                "scripts/record_demos.py (or set demos=/path/to/store.zarr)")
    fingerprint = encoder_fingerprint(encoder, weights_digest(encoder))
    return (Path(out) if out else default_cache_path(demos, fingerprint)), fingerprint


def is_current(path: Path, demos: str | Path, fingerprint: str) -> bool:
    """Whether the cache at ``path`` is complete for the demo store as it is now (a build stopped half-way is not:
    building again resumes it). A cache without its demo store beside it is trusted by its key."""
    if not path.exists():
        return False
    cache = open_feature_cache(path, fingerprint)  # refuses another encoder's cache
    if not Path(demos).exists():
        return True
    source = EpisodeStore.open(demos)
    return cache.attrs["source"]["fingerprint"] == source.fingerprint and cache.n_episodes == source.n_episodes


def _superset(demos: str | Path, encoder: EncoderConfig) -> Path | None:
    """For a ``cls`` readout: a complete, current ``cls+grid`` cache of the same encoder and demos at its default path
    (its features start with the CLS ones), else None. The oracle reads no frames: never."""
    if encoder.is_oracle or encoder.readout != "cls" or not Path(demos).exists():
        return None
    wider = replace(encoder, readout="cls+grid")
    fingerprint = encoder_fingerprint(wider, weights_digest(wider))
    path = default_cache_path(demos, fingerprint)
    return path if is_current(path, demos, fingerprint) else None


def ensure_feature_cache(demos: str | Path, encoder: EncoderConfig, out: str | Path | None = None,
                         batch_size: int = 256, progress: bool = True,
                         dist: DistInfo | None = None) -> tuple[Path, str]:
    """(path, encoder fingerprint) of the complete, current feature cache of (demos, encoder): reused when current,
    else cut from a current ``cls+grid`` cache (``cls`` readouts), else built or resumed by encoding. The encoder is
    built only when something must be encoded. Under torchrun every rank calls it (``dist``): rank 0 decides and
    cuts, every rank encodes its share."""
    path, fingerprint = cache_location(demos, out, encoder)
    dist = dist or DistInfo()
    if on_main(dist, lambda: is_current(path, demos, fingerprint)):
        return path, fingerprint
    if (superset := on_main(dist, lambda: _superset(demos, encoder))) is not None:
        on_main(dist, lambda: slice_feature_cache(superset, demos, _built(encoder, progress), path, progress=progress))
    else:
        build_feature_cache(demos, _built(encoder, progress and dist.is_main), path, batch_size, progress, dist=dist)
    return path, fingerprint


def _built(encoder: EncoderConfig, warn: bool) -> Encoder:
    frozen = build_encoder(encoder)
    if frozen.weights.is_random and warn:
        print(f"WARNING: encoder {encoder.variant} has RANDOM weights: success numbers will not mean anything about "
              "pretrained features")
    return frozen


def views_are_complete(path: Path, cache_path: Path, views: ViewsConfig) -> bool:
    """Whether ``path`` holds the complete shifted views of the feature cache at ``cache_path`` (its encoder, demos
    and episode count): then nothing is built, demos or not."""
    cache = open_feature_cache(cache_path)
    try:
        open_views_cache(path, cache.attrs["encoder_fingerprint"], views, cache.attrs["source"]["fingerprint"],
                         cache.n_episodes)
    except (ValueError, FileNotFoundError):
        return False
    return True


def ensure_views(demos: str | Path, cache_path: Path, encoder: EncoderConfig, views: ViewsConfig,
                 batch_size: int = 256, progress: bool = True, dist: DistInfo | None = None) -> Path:
    """The complete shifted views (``views.n`` ≥ 1) beside the current feature cache at ``cache_path``: reused when
    complete, else built (or resumed) from the demos' frames; under torchrun by every rank (``dist``), as the cache."""
    path, dist = views_cache_path(cache_path, views), dist or DistInfo()
    if not on_main(dist, lambda: views_are_complete(path, cache_path, views)):
        build_feature_cache(demos, build_encoder(encoder), path, batch_size, progress, views, dist)
    return path

