"""An evaluation run, recorded and resumed a wave at a time, by one process or shared by the ranks of a torchrun job.

Waves: ``sim.rollout.run_episodes`` runs the episodes in waves of ``n_envs`` side by side (the same slots, the same
encoder and policy batches whoever runs them), so the ranks split the waves, not the episodes: rank r of N runs
the consecutive waves ``plan_waves(n_waves, N)[r]``, and every episode's result equals a one-process run's.

Parts: ``<out>/.parts/rank-<r>-of-<N>.jsonl``: a header line (the evaluation's key, rank, world, share), then one
line per finished wave (its index, its episodes' results, its videos), appended and fsynced as the wave ends, so a
killed process leaves whole waves (a torn last line is ignored).

Resume: every part in the folder with this evaluation's key counts, whatever N wrote it; each rank runs only the
waves of its share that no part holds. A part of another evaluation (another checkpoint, step or setting) is ignored.

Merge: rank 0 reads every part, checks that every wave is there (else it refuses, naming the rank, its episodes and
the fix), and returns the results in episode order; ``remove_parts`` deletes the parts once results.json is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from s2robot.common.distributed import DistInfo, barrier, raise_if_any_failed
from s2robot.sim.rollout import Episode, EpisodeResult, wave_width

PARTS = ".parts"
RERUN = "Re-run the same command: finished waves are kept"
RunWaves = Callable[[list[int], Callable[[int, list[EpisodeResult], dict[int, list[np.ndarray]]], None]], None]
WriteVideos = Callable[[dict[int, list[np.ndarray]], Mapping[int, EpisodeResult]], list[Path]]


def plan_waves(n_waves: int, world: int) -> list[range]:
    """The waves of each of ``world`` ranks: consecutive runs, as even in count as they can be (a rank gets none
    when there are fewer waves than ranks)."""
    return [range(r * n_waves // world, (r + 1) * n_waves // world) for r in range(world)]


def eval_key(checkpoint: str | Path, settings: Mapping[str, Any]) -> str:
    """What an evaluation's results depend on, hashed: the checkpoint's ``config.json`` (its step and weights) and
    ``settings`` (the evaluation's config without its output folder, progress bar and logging)."""
    config = Path(checkpoint) / "config.json"
    h = hashlib.sha256(config.read_bytes() if config.exists() else b"")
    h.update(str(Path(checkpoint).resolve()).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def parts_dir(out: str | Path) -> Path:
    return Path(out) / PARTS


def part_path(out: str | Path, rank: int, world: int) -> Path:
    return parts_dir(out) / f"rank-{rank}-of-{world}.jsonl"


def _lines(path: Path) -> list[dict[str, Any]]:
    """The whole JSON lines of a part; a torn last line (a process killed mid-write) is dropped."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def finished_waves(out: str | Path, key: str) -> dict[int, dict[str, Any]]:
    """{wave: {"results": [...], "videos": [...]}} of every part under ``out`` written for ``key``."""
    found: dict[int, dict[str, Any]] = {}
    folder = parts_dir(out)
    for path in sorted(folder.glob("rank-*.jsonl")) if folder.is_dir() else ():
        lines = _lines(path) if path.is_file() else []
        if lines and lines[0].get("key") == key:
            for line in lines[1:]:
                found[int(line["wave"])] = line
    return found


def _append(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def wave_recorder(out: Path, key: str, dist: DistInfo, share: range, index: Mapping[tuple[int, int], int],
                  write_videos: WriteVideos) -> Callable[[int, list[EpisodeResult], dict[int, list[np.ndarray]]], None]:
    """The ``run_episodes(on_wave=...)`` hook of rank ``dist.rank``: films the wave's episodes and appends the wave to
    this rank's part. ``index``: (position, repeat) → the episode's index in the evaluation."""
    path = part_path(out, dist.rank, dist.world)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (path.exists() and (lines := _lines(path)) and lines[0].get("key") == key):
        path.write_text(json.dumps({"key": key, "rank": dist.rank, "world": dist.world,
                                    "waves": [share.start, share.stop]}) + "\n")

    def record(wave: int, results: list[EpisodeResult], frames: dict[int, list[np.ndarray]]) -> None:
        videos = write_videos(frames, {index[(r.position, r.repeat)]: r for r in results}) if frames else []
        _append(path, {"wave": wave, "results": [asdict(r) for r in results], "videos": [str(v) for v in videos]})

    return record


def _episodes_of(waves: range, width: int, n_episodes: int) -> str:
    first, last = waves.start * width, min(waves.stop * width, n_episodes) - 1
    return f"episodes {first}–{last}"


def run_shared(out: Path, key: str, dist: DistInfo, episodes: Sequence[Episode], n_envs: int, run_waves: RunWaves,
               write_videos: WriteVideos) -> tuple[list[EpisodeResult], list[Path], int] | None:
    """This rank's share of the evaluation's waves run (those no part holds yet), then, on rank 0, every wave's
    results merged: (results in episode order, video paths, episodes this command ran, all ranks together).
    Other ranks: None.

    A collective: every rank calls it. A rank whose share fails stops every rank with an error naming it, its
    episodes and the fix; one process raises the error itself.
    """
    width = wave_width(len(episodes), n_envs)
    n_waves = -(-len(episodes) // width)
    shares = plan_waves(n_waves, dist.world)
    share = shares[dist.rank]
    done = finished_waves(out, key)
    barrier(dist)  # every rank has read what was finished before any rank appends to its part
    todo = [k for k in share if k not in done]
    if done and dist.is_main:
        print(f"resuming the evaluation in {out}: {sum(len(w['results']) for w in done.values())} episodes of "
              f"{len(done)} finished waves kept")
    index = {(e.position, e.repeat): k for k, e in enumerate(episodes)}

    def run_share() -> None:
        run_waves(todo, wave_recorder(out, key, dist, share, index, write_videos))

    if dist.world == 1:
        run_share()
    else:
        error = None
        try:
            run_share()
        except Exception as e:  # reported by every rank, with this share, instead of leaving the others waiting
            error = (f"rank {dist.rank} of {dist.world} failed on its share of the evaluation in {out}, "
                     f"{_episodes_of(share, width, len(episodes))}: {type(e).__name__}: {e}. {RERUN}")
        raise_if_any_failed(dist, error)
    ran = sum(len(episodes[k * width : (k + 1) * width]) for k in range(n_waves) if k not in done)  # by every rank
    if not dist.is_main:
        return None
    return (*merge_waves(out, key, shares, width, episodes), ran)


def merge_waves(out: Path, key: str, shares: list[range], width: int, episodes: Sequence[Episode]
                ) -> tuple[list[EpisodeResult], list[Path]]:
    """Every wave's results read back from the parts, in episode order, and the videos filmed; refuses (naming the
    rank whose share is incomplete, its episodes and the fix) when a wave is missing."""
    done = finished_waves(out, key)
    for rank, share in enumerate(shares):
        if missing := [k for k in share if k not in done]:
            raise RuntimeError(f"the evaluation in {out}: rank {rank} of {len(shares)} did not finish its share, "
                               f"{_episodes_of(share, width, len(episodes))} ({len(missing)} of its {len(share)} "
                               f"waves missing from {parts_dir(out)}). Nothing was merged. {RERUN}")
    results = [EpisodeResult(**r) for k in sorted(done) if k < sum(map(len, shares)) for r in done[k]["results"]]
    order = {(e.position, e.repeat): k for k, e in enumerate(episodes)}
    results.sort(key=lambda r: order[(r.position, r.repeat)])
    if [order[(r.position, r.repeat)] for r in results] != list(range(len(episodes))):
        raise RuntimeError(f"the parts in {parts_dir(out)} do not hold this evaluation's {len(episodes)} episodes "
                           "once each: delete the folder and run the evaluation again")
    videos = [Path(v) for k in sorted(done) for v in done[k].get("videos", [])]
    return results, videos


def remove_parts(out: str | Path) -> None:
    """Delete ``<out>/.parts`` (after results.json is written: the parts are the evaluation's only record until
    then)."""
    shutil.rmtree(parts_dir(out), ignore_errors=True)
