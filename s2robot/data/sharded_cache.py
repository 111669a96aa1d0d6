"""A feature cache built by several torchrun processes: each rank encodes a share of the demos' episodes into a part
store of its own, then rank 0 merges the parts into the one cache, the cache a single process builds bit for bit.

Shares: the episodes are cut into the groups a single process encodes (``episode_groups`` from episode 0, ≥
``batch_size`` steps each, encoded in shared batches), and runs of consecutive groups go to the ranks in order,
balanced by steps (``plan_shares``). Every frame is encoded in the same batch as in a one-process build, so kernels
whose floats depend on the batch shape (cuBLAS chooses by shape) give the same features too.

Parts: ``<cache>.parts/rank-<r>-of-<N>.zarr``, an ``EpisodeStore`` with the cache's attrs, the kind
``s2robot.FeatureCachePart`` and ``part`` = {rank, world, episodes [lo, hi), batch_size, first}: it holds episodes
``first, first + 1, ...`` of its share, committed one group at a time (crash-safe, resumable).

Merge: rank 0 checks that every part the cache still needs is complete (else it raises naming the rank, its episodes
and the fix, before merging anything), appends the parts in episode order (each group committed atomically, so a
merge that stops resumes from the cache's own episode count) and removes ``<cache>.parts``.

Resume: a re-run of the same command (same N and batch_size) keeps the cache's episodes and every part's; each rank
encodes only the episodes of its share that neither holds. Parts of another N or batch_size are not used.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from s2robot.common.distributed import DistInfo, on_main, raise_if_any_failed
from s2robot.common.lock import writer_lock
from s2robot.data.episode_groups import Episode, EpisodeGroup, episode_groups, process_groups
from s2robot.data.store import EpisodeStore

PART_KIND = "s2robot.FeatureCachePart"
RERUN = "Re-run the same command: finished shares are kept"
GroupEncoder = Callable[[EpisodeGroup], list[Episode]]  # a group of demo episodes → its cache episodes


def plan_shares(ends: np.ndarray, batch_size: int, world: int) -> list[range]:
    """The episodes of each of ``world`` ranks: consecutive runs of the groups of ``episode_groups(ends, 0,
    batch_size)``, in order, a group going to the rank whose slice of the steps holds its middle step. A rank may
    get none (an empty range) when there are fewer groups than ranks."""
    groups = episode_groups(ends, 0, batch_size)
    total = int(ends[-1])
    owners = []
    for g in groups:
        a, b = (int(ends[g.start - 1]) if g.start else 0), int(ends[g.stop - 1])  # the group's steps [a, b)
        owners.append(min(world - 1, (a + b) * world // (2 * total)))
    shares, stop = [], 0
    for rank in range(world):
        mine = [g for g, owner in zip(groups, owners, strict=True) if owner == rank]
        shares.append(range(mine[0].start, mine[-1].stop) if mine else range(stop, stop))
        stop = shares[-1].stop
    return shares


def parts_dir(path: str | Path) -> Path:
    """``<cache>.parts``: the folder of the part stores of the cache at ``path``."""
    return Path(path).with_name(Path(path).name + ".parts")


def part_path(path: str | Path, rank: int, world: int) -> Path:
    """``<cache>.parts/rank-<rank>-of-<world>.zarr``."""
    return parts_dir(path) / f"rank-{rank}-of-{world}.zarr"


def _part_attrs(cache_attrs: Mapping[str, Any], rank: int, world: int, share: range,
                batch_size: int) -> dict[str, Any]:
    return {**cache_attrs, "kind": PART_KIND,
            "part": {"rank": rank, "world": world, "episodes": [share.start, share.stop], "batch_size": batch_size}}


def _first(part: EpisodeStore, attrs: Mapping[str, Any]) -> int | None:
    """The first episode the part holds when it is a part of ``attrs`` (the cache, rank, share, batch size); else
    None."""
    found = dict(part.attrs)  # a copy: its nested dicts are fresh
    first = found.get("part", {}).pop("first", None)
    return first if found == attrs else None


def open_part(path: Path, attrs: Mapping[str, Any], need_from: int) -> EpisodeStore:
    """The part at ``path`` to append to: the one there when it is of ``attrs`` and holds episodes up to
    ``need_from`` from no later than it, else a new one that starts at ``need_from`` (after a warning if one was
    there)."""
    if path.exists():
        try:
            part = EpisodeStore.open(path, mode="a")
            first = _first(part, attrs)
            if first is not None and first <= need_from <= first + part.n_episodes:
                return part
            why = ("of another build" if first is None else
                   f"holds episodes [{first}, {first + part.n_episodes}), which do not lead up to episode {need_from}")
        except ValueError as e:
            why = f"unreadable ({e})"
        warnings.warn(f"part store {path} is {why}: encoding its episodes again", stacklevel=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    return EpisodeStore.create(path, attrs={**attrs, "part": {**attrs["part"], "first": need_from}}, overwrite=True)


def encode_share(source: EpisodeStore, path: Path, dist: DistInfo, share: range, done: int,
                 cache_attrs: Mapping[str, Any], encode: GroupEncoder, batch_size: int, progress: bool = True,
                 frames_per_step: int = 1) -> int:
    """Encode the episodes of ``share`` that neither the cache at ``path`` (its first ``done``) nor this rank's part
    holds into the part; returns how many steps were encoded."""
    need_from = max(share.start, done)
    if need_from >= share.stop:
        return 0
    attrs = _part_attrs(cache_attrs, dist.rank, dist.world, share, batch_size)
    part = open_part(part_path(path, dist.rank, dist.world), attrs, need_from)
    have = part.attrs["part"]["first"] + part.n_episodes
    ends = source.episode_ends
    steps = int(ends[share.stop - 1]) - (int(ends[have - 1]) if have else 0)
    bar = tqdm(total=steps * frames_per_step, unit="frame", disable=not (progress and dist.is_main and steps),
               desc=f"caching {path.name}, rank 0/{dist.world}")
    t0 = time.perf_counter()
    process_groups(source, episode_groups(ends, have, batch_size, stop=share.stop), encode, part.add_episodes,
                   lambda group: bar.update(group.bounds[-1][1] * frames_per_step))
    bar.close()
    if progress and steps:
        frames = steps * frames_per_step
        print(f"rank {dist.rank}/{dist.world}: encoded {frames} frames of episodes {have}–{share.stop - 1} at "
              f"{frames / (time.perf_counter() - t0):.1f} frames/s into {part.path}")
    return steps


def _finished_part(path: Path, rank: int, world: int, share: range, attrs: Mapping[str, Any], done: int,
                   batch_size: int) -> EpisodeStore:
    """Rank ``rank``'s part, checked to hold every episode of ``share`` from ``done`` (the cache's count) on."""
    part_at = part_path(path, rank, world)
    holds = "is missing"
    try:
        part = EpisodeStore.open(part_at) if part_at.exists() else None
    except ValueError as e:
        part, holds = None, f"is unreadable ({e})"
    if part is not None:
        first = _first(part, _part_attrs(attrs, rank, world, share, batch_size))
        if first is not None and first <= max(share.start, done) and first + part.n_episodes == share.stop:
            return part
        holds = ("is of another build" if first is None else
                 f"holds {part.n_episodes} of them, from episode {first} on")
    raise RuntimeError(f"feature cache {path}: rank {rank} of {world} did not finish its share, episodes "
                       f"{share.start}–{share.stop - 1} ({len(share)}); its part {part_at} {holds}. Nothing was "
                       f"merged. {RERUN}")


def merge_parts(path: Path, shares: list[range], batch_size: int, progress: bool = True) -> None:
    """Append the parts of the cache at ``path`` (every rank's share: ``shares``) to it in episode order, then remove
    them; refuses (naming the rank, its episodes and the fix) when a part it needs is missing or incomplete."""
    cache = EpisodeStore.open(path, mode="a")
    world, done, attrs = len(shares), cache.n_episodes, dict(cache.attrs)
    needed = [(r, share) for r, share in enumerate(shares) if len(share) and share.stop > done]
    parts = [_finished_part(path, r, world, share, attrs, done, batch_size) for r, share in needed]
    t0 = time.perf_counter()
    for part in parts:
        def copy(group: EpisodeGroup, part: EpisodeStore = part) -> list[Episode]:
            return [(ep, part.episode_info(i)) for i, ep in group]

        first = part.attrs["part"]["first"]
        process_groups(part, episode_groups(part.episode_ends, cache.n_episodes - first, batch_size), copy,
                       cache.add_episodes)
    if cache.n_episodes != shares[-1].stop:
        raise RuntimeError(f"feature cache {path} holds {cache.n_episodes} episodes after merging its parts, not "
                           f"{shares[-1].stop}: delete it and {parts_dir(path)}, then build it again")
    shutil.rmtree(parts_dir(path), ignore_errors=True)
    if progress and parts:
        print(f"merged {len(parts)} part(s) into {path} ({cache.n_episodes - done} episodes, "
              f"{time.perf_counter() - t0:.1f} s)")


def build_sharded(source: EpisodeStore, path: Path, start: Callable[[], EpisodeStore], encode: GroupEncoder,
                  batch_size: int, dist: DistInfo, progress: bool = True, frames_per_step: int = 1) -> Path:
    """The cache at ``path`` built (or resumed) by every rank of ``dist``; a collective: every rank calls it.

    start: on rank 0, the cache to append to (the current one, or a new empty one); rank 0 holds the cache's writer
        lock throughout. encode: a group of demo episodes → its cache episodes.
    """
    with ExitStack() as held:
        def begin() -> tuple[int, dict[str, Any]]:
            held.enter_context(writer_lock(path, "feature cache"))
            cache = start()
            if cache.n_episodes == source.n_episodes:
                shutil.rmtree(parts_dir(path), ignore_errors=True)  # left by a merge that stopped before removing
            return cache.n_episodes, dict(cache.attrs)

        done, attrs = on_main(dist, begin)
        if done == source.n_episodes:
            return path
        shares = plan_shares(source.episode_ends, batch_size, dist.world)
        share, error = shares[dist.rank], None
        try:
            encode_share(source, path, dist, share, done, attrs, encode, batch_size, progress, frames_per_step)
        except Exception as e:  # reported by every rank, with this share, instead of leaving the others waiting
            error = (f"rank {dist.rank} of {dist.world} failed on its share of {path}, episodes {share.start}–"
                     f"{share.stop - 1}: {type(e).__name__}: {e}. {RERUN}")
        raise_if_any_failed(dist, error)
        on_main(dist, lambda: merge_parts(path, shares, batch_size, progress))
    return path
