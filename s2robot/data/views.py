"""Shifted views of the demo frames, encoded once beside the feature cache: image augmentation where the cache
allows it.

The encoder is frozen and its features are cached, so the random crops of Diffusion Policy and robomimic (DrQ's
random shift) cannot be drawn afresh every step. Instead every demo frame is also encoded as ``n`` shifted views:
view ``k`` of episode ``e`` moves all of that episode's frames by one offset ``(dx, dy)`` of at most ``shift``
pixels along each axis (edges replicated, DrQ's pad-and-crop), as a camera mounted a little off would see them.
Training then reads, for a fraction ``prob`` of its windows, one shifted view (the same for all ``To`` steps of the
window) instead of the frames as rendered. Evaluation always encodes the frames as rendered.

Scene views: with ``scenes``, the views are read from another demo store instead, holding the same episodes
recorded in varied scenes (``record_demos.py`` with the demos' settings and seeds and a visual ``variation=``: the
expert acts on the state, so every action and joint reading is the same and only the frames differ). Training then
sees each demonstration both as recorded and in another scene, the same motion under other lights, tables and
cameras: what to ignore, taught without a single demonstration per scene to overfit (``docs/robustness.md``).

The views live in their own store next to the feature cache (``views_cache_path``), so the cache itself, and
every run that reads it without views, stays as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s2robot.data.store import EpisodeStore


@dataclass
class ViewsConfig:
    """Shifted views per demo frame (see the module docstring).

    n: shifted views per frame (0: none; each costs one more encoding of every frame)
    shift: largest offset along each axis [px]; 0 (with ``scenes`` and ``n=1`` only): the scene store's frames as
        recorded
    prob: chance that a training window reads a shifted view instead of the rendered frames
    seed: draws each (episode, view)'s offset
    scenes: a demo store of the same episodes recorded in varied scenes; the views are its frames (shifted by
        ``shift``) instead of the demos' own. None: the demos' frames
    """

    n: int = 0
    shift: int = 8
    prob: float = 0.5
    seed: int = 0
    scenes: str | None = None

    def __post_init__(self) -> None:
        if self.n < 0 or self.shift < 0 or (self.shift == 0 and (self.scenes is None or self.n > 1)):
            raise ValueError(f"views need n ≥ 0 and shift ≥ 1 px (shift=0 only with scenes= and n=1: the scene "
                             f"store's frames as recorded), got n={self.n}, shift={self.shift}, scenes={self.scenes}")
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"views.prob must be in [0, 1], got {self.prob}")

    def key(self) -> dict[str, Any]:
        """What the encoded views depend on (``prob`` only matters to training; a scene store by its content's
        fingerprint, not its path)."""
        key: dict[str, Any] = {k: v for k, v in asdict(self).items() if k not in ("prob", "scenes")}
        if self.scenes is not None:
            key["scenes"] = scene_store(self.scenes).fingerprint
        return key


def scene_store(path: str | Path) -> EpisodeStore:
    """The scene views' store at ``path``, opened read-only; a missing one is a FileNotFoundError saying how to
    record it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"scene views store {path} does not exist: record it with the demos' settings and "
                                "seeds and a visual variation (python scripts/record_demos.py out=... "
                                "variation=standard_visual ...; make run records it itself)")
    return EpisodeStore.open(path)


def paired_scene_steps(scenes: EpisodeStore, demos: EpisodeStore, i: int, key: str) -> np.ndarray:
    """Steps of ``key`` of episode ``i`` of the scene store, after checking that it is the demos' episode ``i`` in
    another scene (same length, the same actions); a ValueError naming the episode otherwise."""
    (a, b), (c, d) = scenes.episode_bounds(i), demos.episode_bounds(i)
    if b - a != d - c or not np.array_equal(scenes.get_steps("action", a, b), demos.get_steps("action", c, d)):
        raise ValueError(f"episode {i} of the scene store {scenes.path} is not episode {i} of the demos {demos.path} "
                         f"in another scene (its length or actions differ: {b - a} vs {d - c} steps). Record the "
                         "scene store with the demos' settings and seeds, changing only variation= to a visual one")
    return scenes.get_steps(key, a, b)


def view_offsets(cfg: ViewsConfig, episode: int) -> np.ndarray:
    """(n, 2) integer offsets (dx, dy) [px] of episode ``episode``'s views, each in [-shift, shift], never (0, 0)
    (all (0, 0) with ``shift=0``: a scene store's frames as recorded)."""
    rng = np.random.default_rng([cfg.seed, episode])
    out = np.zeros((cfg.n, 2), np.int64)
    if cfg.shift == 0:
        return out
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
    """``<cache>.zarr`` → ``<cache>-views<n>s<shift>r<seed>.zarr`` beside it (``…-<scene store's name>.zarr`` with
    ``scenes``)."""
    path = Path(cache_path)
    scenes = f"-{Path(cfg.scenes).name.removesuffix('.zarr')}" if cfg.scenes is not None else ""
    return path.with_name(f"{path.name.removesuffix('.zarr')}-views{cfg.n}s{cfg.shift}r{cfg.seed}{scenes}.zarr")
