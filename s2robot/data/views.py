"""Shifted views of the demo frames, encoded once beside the feature cache: image augmentation where the cache
allows it.

The encoder is frozen and its features are cached, so the random crops of Diffusion Policy and robomimic (DrQ's
random shift) cannot be drawn afresh every step. Instead every demo frame is also encoded as ``n`` shifted views:
view ``k`` of episode ``e`` moves all of that episode's frames by one offset ``(dx, dy)`` of at most ``shift``
pixels along each axis (edges replicated, DrQ's pad-and-crop), as a camera mounted a little off would see them.
Training then reads, for a fraction ``prob`` of its windows, one shifted view (the same for all ``To`` steps of the
window) instead of the frames as rendered. Evaluation always encodes the frames as rendered.

The views live in their own store next to the feature cache (``views_cache_path``), so the cache itself, and
every run that reads it without views, stays as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class ViewsConfig:
    """Shifted views per demo frame (see the module docstring).

    n: shifted views per frame (0: none; each costs one more encoding of every frame)
    shift: largest offset along each axis [px]
    prob: chance that a training window reads a shifted view instead of the rendered frames
    seed: draws each (episode, view)'s offset
    """

    n: int = 0
    shift: int = 8
    prob: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 0 or self.shift < 1:
            raise ValueError(f"views need n ≥ 0 and shift ≥ 1 px, got n={self.n}, shift={self.shift}")
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"views.prob must be in [0, 1], got {self.prob}")

    def key(self) -> dict[str, int]:
        """What the encoded views depend on (``prob`` only matters to training)."""
        return {k: v for k, v in asdict(self).items() if k != "prob"}


def view_offsets(cfg: ViewsConfig, episode: int) -> np.ndarray:
    """(n, 2) integer offsets (dx, dy) [px] of episode ``episode``'s views, each in [-shift, shift], never (0, 0)."""
    rng = np.random.default_rng([cfg.seed, episode])
    out = np.zeros((cfg.n, 2), np.int64)
    for k in range(cfg.n):
        while not out[k].any():  # a zero offset would be the rendered frames again
            out[k] = rng.integers(-cfg.shift, cfg.shift + 1, 2)
    return out


def shift_frames(frames: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Frames (T, H, W, C) moved by (dx, dy) px (content moves right / down for positive offsets), the edge rows and
    columns repeated into the uncovered border: the same (T, H, W, C)."""
    _, h, w, _ = frames.shape
    if abs(dx) >= w or abs(dy) >= h:
        raise ValueError(f"offset ({dx}, {dy}) px does not fit frames of {h}×{w}")
    p = max(abs(dx), abs(dy))
    padded = np.pad(frames, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")  # (T, H+2p, W+2p, C)
    return np.ascontiguousarray(padded[:, p - dy: p - dy + h, p - dx: p - dx + w])


def draw_views(cfg: ViewsConfig, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1
               ) -> np.ndarray:
    """(batch_size // world,) which view each sample of this rank's shard of training step ``step``'s global batch
    reads: -1 for the rendered frames, else 0 … n-1 (each sample a view with probability ``prob``). Drawn for the
    whole global batch from (seed, step) and sharded as ``batch_indices`` shards it, so any number of DDP processes
    draws what one process does."""
    rng = np.random.default_rng([seed, step, 0x5F1E])  # its own stream, apart from the batch's permutation
    view = np.where(rng.random(batch_size) < cfg.prob, rng.integers(0, max(cfg.n, 1), batch_size), -1)  # (B,)
    shard = batch_size // world
    return view[rank * shard: (rank + 1) * shard]


def views_cache_path(cache_path: str | Path, cfg: ViewsConfig) -> Path:
    """``<cache>.zarr`` → ``<cache>-views<n>s<shift>r<seed>.zarr`` beside it."""
    path = Path(cache_path)
    return path.with_name(f"{path.name.removesuffix('.zarr')}-views{cfg.n}s{cfg.shift}r{cfg.seed}.zarr")
