"""Feature cache: frozen S² features of every frame of a demo store, computed once.

The encoder is frozen, so training never runs it: ``build_feature_cache`` encodes each camera's frames
(``rgb_<camera>``) into ``feat_<camera>`` float16 ``(T, F)`` and copies every other per-step key
(``proprio``, ``action``, ...) into a cache store with the same episode layout (an ``EpisodeStore``).

Cache key = (encoder fingerprint, source-store fingerprint), both in the cache's attrs. A re-run with the
same key is a no-op; a changed encoder lands in another file (the default path contains the encoder
fingerprint); a changed demo store makes the cache stale, which is reported and rebuilt, never reused.
An interrupted build resumes where it stopped: every episode is committed atomically by the store.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from s2robot.data.keys import feat_key, is_rgb, rgb_cameras, rgb_key
from s2robot.data.store import EpisodeStore
from s2robot.vision.encoder import FrozenS2Encoder

KIND = "s2robot.FeatureCache"


def cameras_of(store: EpisodeStore) -> list[str]:
    """Camera names of a demo store: its ``rgb_<camera>`` keys."""
    return rgb_cameras(store.keys)


def default_cache_path(demo_path: str | Path, encoder_fingerprint: str) -> Path:
    """``demos/<name>.zarr`` → ``demos/features/<name>-<encoder fingerprint>.zarr``."""
    name = Path(demo_path).name.removesuffix(".zarr")
    return Path(demo_path).parent / "features" / f"{name}-{encoder_fingerprint}.zarr"


def cache_key(store: EpisodeStore) -> tuple[str | None, str | None]:
    """(encoder fingerprint, source fingerprint) recorded in a cache store's attrs."""
    return store.attrs.get("encoder_fingerprint"), store.attrs.get("source", {}).get("fingerprint")


def _prefetch(source: EpisodeStore, episodes: range, depth: int = 4) -> Iterator[tuple[int, dict]]:
    """Episodes read by a loader thread, so zarr reads and decompression overlap encoding."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def load() -> None:
        try:
            for i in episodes:
                if stop.is_set():
                    return
                q.put((i, source.get_episode(i)))
            q.put(done)
        except BaseException as e:  # hand the error to the consumer
            q.put(e)

    thread = threading.Thread(target=load, name="feature-cache-loader", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not q.empty():  # unblock a loader waiting on a full queue
            q.get_nowait()
        thread.join(timeout=10)


def _encode(encoder: FrozenS2Encoder, frames: np.ndarray, batch_size: int) -> np.ndarray:
    """Frames ``(T, S, S, 3)`` uint8 → float16 features ``(T, F)``, in batches."""
    x = torch.from_numpy(frames)
    if encoder.device.type == "cuda":
        x = x.pin_memory()  # page-locked: the host-to-GPU copy runs asynchronously
    out = [encoder(x[i : i + batch_size]).to(torch.float16) for i in range(0, len(x), batch_size)]
    return torch.cat(out).cpu().numpy()


def _open_existing(path: Path, key: tuple[str, str]) -> EpisodeStore | None:
    """The cache at ``path`` if it has ``key``; None (after a warning) if it is stale or unreadable."""
    try:
        cache = EpisodeStore.open(path, mode="a")
    except ValueError as e:
        warnings.warn(f"feature cache {path} is unreadable ({e}); rebuilding it", stacklevel=3)
        return None
    found = cache_key(cache)
    if found == key:
        return cache
    what = "encoder" if found[0] != key[0] else "demo store"
    warnings.warn(
        f"feature cache {path} is stale: the {what} changed (cache key {found}, now {key}); rebuilding it",
        stacklevel=3,
    )
    return None


def build_feature_cache(
    demo_path: str | Path,
    encoder: FrozenS2Encoder,
    out: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> Path:
    """Encode every frame of the demo store at ``demo_path``; returns the cache path (see module doc)."""
    source = EpisodeStore.open(demo_path)
    cameras = cameras_of(source)
    if not cameras:
        raise ValueError(f"{demo_path} has no camera frames (rgb_<camera> keys); keys: {list(source.keys)}")
    if source.n_episodes == 0:
        raise ValueError(f"{demo_path} holds no episodes; record demos first (scripts/record_demos.py)")
    key = (encoder.fingerprint, source.fingerprint)
    path = Path(out) if out is not None else default_cache_path(demo_path, key[0])
    cache = _open_existing(path, key) if path.exists() else None
    if cache is not None and cache.n_episodes == source.n_episodes:
        return path  # same key, complete: nothing to do
    if cache is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache = EpisodeStore.create(path, attrs=_cache_attrs(demo_path, source, encoder), overwrite=True)
    start = cache.n_episodes
    todo_steps = source.n_steps - (int(source.episode_ends[start - 1]) if start else 0)
    bar = tqdm(total=todo_steps * len(cameras), unit="frame", desc=f"caching {path.name}",
               disable=not progress)
    if start:
        bar.write(f"resuming {path}: {start}/{source.n_episodes} episodes already cached")
    pending: list[tuple[int, dict]] = []
    n_pending, t0 = 0, time.perf_counter()
    for i, ep in _prefetch(source, range(start, source.n_episodes)):
        pending.append((i, ep))
        n_pending += len(ep["action"])
        if n_pending >= batch_size or i == source.n_episodes - 1:
            _flush(pending, source, cache, encoder, cameras, batch_size)
            bar.update(n_pending * len(cameras))
            pending, n_pending = [], 0
    bar.close()
    if progress and todo_steps:
        rate = todo_steps * len(cameras) / (time.perf_counter() - t0)
        print(f"cached {todo_steps * len(cameras)} frames at {rate:.1f} frames/s into {path}")
    return path


def _flush(
    pending: list[tuple[int, dict]],
    source: EpisodeStore,
    cache: EpisodeStore,
    encoder: FrozenS2Encoder,
    cameras: list[str],
    batch_size: int,
) -> None:
    """Encode the frames of several episodes in shared batches, then commit them one episode at a time."""
    lengths = [len(ep["action"]) for _, ep in pending]
    splits = np.cumsum(lengths)[:-1]
    feats = {}
    for cam in cameras:
        frames = np.concatenate([ep[rgb_key(cam)] for _, ep in pending])  # (sum T, S, S, 3)
        feats[cam] = np.split(_encode(encoder, frames, batch_size), splits)
    for j, (i, ep) in enumerate(pending):
        data = {k: np.asarray(v) for k, v in ep.items() if not is_rgb(k)}
        data |= {feat_key(cam): feats[cam][j] for cam in cameras}
        cache.add_episode(data, info=source.episode_info(i))


def _cache_attrs(demo_path: str | Path, source: EpisodeStore, encoder: FrozenS2Encoder) -> dict[str, Any]:
    return {
        "kind": KIND,
        "encoder_fingerprint": encoder.fingerprint,
        "encoder": encoder.describe(),
        "weights_random": encoder.weights.is_random,
        "cameras": cameras_of(source),
        "feature_dim": encoder.feature_dim,
        "source": {
            "path": str(Path(demo_path).resolve()),
            "fingerprint": source.fingerprint,
            "n_episodes": source.n_episodes,
            "attrs": dict(source.attrs),
        },
    }


def open_feature_cache(path: str | Path, encoder_fingerprint: str | None = None) -> EpisodeStore:
    """Open a cache read-only; refuse one made by another encoder than ``encoder_fingerprint``."""
    cache = EpisodeStore.open(path)
    if cache.attrs.get("kind") != KIND:
        raise ValueError(f"{path} is an EpisodeStore but not a feature cache; build one with "
                         "scripts/cache_features.py")
    found = cache_key(cache)[0]
    if encoder_fingerprint is not None and found != encoder_fingerprint:
        raise ValueError(
            f"feature cache {path} was made by encoder {found}, not {encoder_fingerprint} (the configured "
            "encoder); rebuild it with scripts/cache_features.py for this encoder"
        )
    return cache
