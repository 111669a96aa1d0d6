"""Benchmark what checking a feature cache against its digests adds to reading it before training.

Usage: python benchmarks/bench_cache_check.py [--episodes 120] [--steps 40] [--dim 6528] [--reps 3]

A synthetic cache of make run's shape (120 episodes of ~40 steps, 6,528-D float16 features of one camera, proprio and
actions) is read whole, as ``load_training_data`` does, with and without ``check_digests``; the two are timed
interleaved, median of ``reps``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from s2robot.common.bench import elapsed
from s2robot.data.store import EpisodeStore
from s2robot.data.training_set import _read_all, check_digests


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=120)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--dim", type=int, default=6528)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = EpisodeStore.create(Path(tmp) / "cache.zarr")
        store.add_episodes([({"feat_front": rng.normal(size=(args.steps, args.dim)).astype(np.float16),
                              "proprio": rng.normal(size=(args.steps, 8)).astype(np.float32),
                              "action": rng.normal(size=(args.steps, 8)).astype(np.float32)}, {})
                            for _ in range(args.episodes)])
        store = EpisodeStore.open(store.path)
        read, checked = [], []
        for _ in range(args.reps):
            read.append(elapsed(lambda: _read_all(store, store.keys, "cache")))
            checked.append(elapsed(lambda: check_digests(store, _read_all(store, store.keys, "cache"), "cache")))
        mb = store.n_steps * args.dim * 2 / 1e6
        r, c = statistics.median(read), statistics.median(checked)
        print(f"{store.n_episodes} episodes, {store.n_steps} steps, {mb:.0f} MB of features: read {r:.2f} s, "
              f"read + digest check {c:.2f} s: the check adds {c - r:.2f} s ({c / r:.2f}×)")


if __name__ == "__main__":
    main()
