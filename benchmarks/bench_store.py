"""Benchmark EpisodeStore appends, on-disk size, and WindowDataset.get_batch throughput.

Usage: python benchmarks/bench_store.py [--episodes 5] [--steps 100] [--size 224] [--batch 256]

Images are smooth synthetic "renders" (gradients, a moving cube and arm), stored twice: clean (compresses
better than real MuJoCo frames with textures and shadows: a lower bound on size) and with ±1 grey level
of noise (compresses worse than a render: an upper bound).
"""

from __future__ import annotations

import argparse
import tempfile
from collections import deque
from pathlib import Path

import numpy as np

from s2robot.common.bench import elapsed
from s2robot.data.dataset import WindowDataset
from s2robot.data.store import EpisodeStore


def render_like(t: int, size: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """(S, S, 3) uint8 smooth frame at step t: gradients plus two moving flat-shaded boxes."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.empty((size, size, 3), np.float32)
    img[..., 0] = 0.55 + 0.2 * yy
    img[..., 1] = 0.5 + 0.15 * xx
    img[..., 2] = 0.45 + 0.1 * (xx + yy)
    cx, cy = 0.3 + 0.3 * np.sin(t / 20), 0.6
    cube = (np.abs(xx - cx) < 0.06) & (np.abs(yy - cy) < 0.06)
    img[cube] = (0.8, 0.15, 0.1) * (1 - 0.3 * yy[cube, None])
    arm = (np.abs(xx - 0.5 - 0.2 * np.cos(t / 15)) < 0.04) & (yy < 0.5)
    img[arm] = (0.3, 0.3, 0.35)
    img += rng.normal(0, noise / 255, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def bench_store(episode: dict[str, np.ndarray], n_episodes: int, what: str) -> list[tuple[str, str, str]]:
    """Append `n_episodes` copies of `episode`, then read them back; return table rows."""
    T = len(episode["action"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = EpisodeStore.create(Path(tmp) / "bench.zarr")
        dt = elapsed(lambda: deque((store.add_episode(episode) for _ in range(n_episodes)), maxlen=0))
        rows.append(("append", f"{n_episodes * T / dt:,.0f} steps/s", f"{what} + proprio + action"))
        stored = sum(store.array(k).nbytes_stored() for k in store.keys) / n_episodes
        raw = sum(v.nbytes for v in episode.values())
        rows.append(("bytes / episode", f"{stored / 2**20:.2f} MiB",
                     f"{T} steps, raw {raw / 2**20:.1f} MiB, ratio {raw / stored:.1f}x"))
        dt = elapsed(lambda: deque(store, maxlen=0))
        rows.append(("read episodes", f"{store.n_steps / dt:,.0f} steps/s", "get_episode, all keys"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    T = args.steps
    rows = []
    for noise in (0.0, 1.0):
        frames = np.stack([render_like(t, args.size, rng, noise) for t in range(T)])  # (T, S, S, 3)
        episode = {"rgb_front": frames, "proprio": rng.normal(size=(T, 8)).astype(np.float32),
                   "action": rng.normal(size=(T, 8)).astype(np.float32)}
        rows += bench_store(episode, args.episodes, f"{args.size}² rgb, noise {noise:g}")
    n = 120 * T  # a 120-demo feature cache, ViT-B S² width 1536 in float16
    ends = np.arange(T, n + 1, T)
    data = {"feat_front": rng.normal(size=(n, 1536)).astype(np.float16),
            "proprio": rng.normal(size=(n, 8)).astype(np.float32),
            "action": rng.normal(size=(n, 8)).astype(np.float32)}
    ds = WindowDataset(data, ends, t_obs=16, t_act=16)
    idx = rng.integers(0, len(ds), size=(20, args.batch))
    ds.get_batch(idx[0])
    dt = elapsed(lambda: deque((ds.get_batch(i) for i in idx), maxlen=0))
    rows.append(("get_batch", f"{idx.size / dt:,.0f} windows/s", f"B={args.batch}, To=Ta=16, F=1536 f16"))
    dt = elapsed(lambda: deque((ds[int(i)] for i in idx[0]), maxlen=0))
    rows.append(("__getitem__", f"{args.batch / dt:,.0f} windows/s", "per item, same shapes"))

    width = max(len(r[1]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<16} {value:>{width}}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
