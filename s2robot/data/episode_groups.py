"""Consecutive episodes of a store read ahead in groups, one slice per key, each checked against the digests stored
when it was recorded, transformed and written behind: how the feature cache reads its demo store while the encoder
works."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from s2robot.data.store import EpisodeStore

Episode = tuple[Mapping[str, np.ndarray], Mapping[str, Any] | None]  # (data {key: (T, ...)}, info), as add_episodes


def episode_groups(ends: np.ndarray, start: int, min_steps: int, stop: int | None = None) -> list[range]:
    """Consecutive episodes ``[start, stop)`` (``stop``: all) in groups of at least ``min_steps`` steps (the last may
    be smaller): each group is read in one slice and encoded in shared batches. Started at the end of one of its
    groups, the grouping of ``[0, stop)`` goes on with the same groups."""
    stop = len(ends) if stop is None else stop
    groups, first, n = [], start, 0
    for i in range(start, stop):
        n += int(ends[i] - (ends[i - 1] if i else 0))
        if n >= min_steps or i == stop - 1:
            groups.append(range(first, i + 1))
            first, n = i + 1, 0
    return groups


@dataclass(frozen=True)
class EpisodeGroup:
    """Consecutive episodes read with one slice per key: ``data`` {key: (sum T, ...)}, episode ``episodes[j]``
    at rows ``bounds[j]`` of it. Iterating gives ``(episode index, {key: (T, ...)})`` views, no copies."""

    episodes: range
    data: dict[str, np.ndarray]
    bounds: list[tuple[int, int]]

    def __iter__(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for i, (a, b) in zip(self.episodes, self.bounds, strict=True):
            yield i, {k: v[a:b] for k, v in self.data.items()}


def read_group(source: EpisodeStore, group: range) -> EpisodeGroup:
    """The episodes of ``group``, read with one slice per key: zarr decodes a slice's chunks concurrently, and
    one call per group instead of per episode cuts its per-call overhead (on an H100 machine: 265 → 1,038
    frames/s for the whole cache)."""
    ends = source.episode_ends
    start = int(ends[group.start - 1]) if group.start else 0
    data = {k: source.get_steps(k, start, int(ends[group.stop - 1])) for k in source.keys}
    cuts = [start, *(int(ends[i]) for i in group)]
    return EpisodeGroup(group, data, [(a - start, b - start) for a, b in itertools.pairwise(cuts)])


def checked_group(source: EpisodeStore, group: EpisodeGroup) -> EpisodeGroup:
    """``group`` if every episode still matches the digest stored when it was recorded (the store's fingerprint
    hashes stored digests only, so an edited frame would pass unnoticed). Hashing runs in the loader thread."""
    for i, ep in group:
        if not source.matches_digest(i, ep):
            raise ValueError(f"demo store {source.path}, episode {i}: its arrays differ from the digest stored when "
                             "it was recorded (edited or deleted chunks); episodes from it on were not cached. Run "
                             f"python -m s2robot.workflows.store verify {source.path}")
    return group


def prefetch_groups(source: EpisodeStore, groups: list[range], depth: int = 2) -> Iterator[EpisodeGroup]:
    """Groups of episodes read by a loader thread, so zarr reads and decompression overlap encoding."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def load() -> None:
        try:
            for group in groups:
                if stop.is_set():
                    return
                q.put(checked_group(source, read_group(source, group)))
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


def process_groups(source: EpisodeStore, groups: list[range], transform: Callable[[EpisodeGroup], list[Episode]],
                   write: Callable[[Sequence[Episode]], None],
                   done: Callable[[EpisodeGroup], None] | None = None) -> None:
    """Every group of ``source`` read (by a loader thread, ahead), ``transform``-ed here and committed with ``write``
    (one call per group, by a writer thread while the next group is transformed); ``done(group)`` after each.

    One group is in flight at a time: commits stay in order, and a failed read, transform or write is raised here
    with every group before it committed."""
    with ThreadPoolExecutor(1, thread_name_prefix="feature-cache-writer") as writer:
        written: Future | None = None
        for group in prefetch_groups(source, groups):
            episodes = transform(group)
            if written is not None:
                written.result()  # errors surface here
            written = writer.submit(write, episodes)
            if done is not None:
                done(group)
        if written is not None:
            written.result()
