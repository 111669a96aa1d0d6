"""Training windows over recorded episodes: the past To observations and the next Ta actions per step.

For sample step t of an episode covering global steps [start, end):

- observation window: steps t-To+1 .. t (inclusive). Steps before `start` are padding: they repeat the
  episode's first step and are marked in `obs_is_pad` (To,).
- previous action at step s: action[s-1]; at the episode's first step (and so at every padded step,
  which repeats it) there is none and it is zeros, marked in `prev_action_is_pad` (To,). So
  `prev_action_is_pad` = `obs_is_pad` plus the position holding the episode's first step.
- action target window: action[t .. t+Ta-1]. Steps at or after `end` are padding: they repeat the
  episode's last action and are marked in `action_is_pad` (Ta,).

`window_indices` computes all gather indices and masks as a pure vectorised function (as the sampler in
Diffusion Policy); `WindowDataset` gathers from in-memory arrays (a feature cache is small).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from s2robot.data.keys import EXECUTED_SUFFIX, episode_starts, feat_keys, is_rgb
from s2robot.data.store import EpisodeStore


@dataclass(frozen=True)
class WindowIndex:
    """Gather indices (into arrays of all T steps) and pad masks of N samples, one per selected step."""

    step: np.ndarray  # (N,) int64 global step t of each sample
    obs: np.ndarray  # (N, To) int64 observation steps, clamped to the episode start
    obs_is_pad: np.ndarray  # (N, To) bool, step before the episode start
    prev_action: np.ndarray  # (N, To) int64 step of the previous action (0 where prev_action_is_pad)
    prev_action_is_pad: np.ndarray  # (N, To) bool, no previous action: use zeros
    action: np.ndarray  # (N, Ta) int64 action steps, clamped to the episode's last step
    action_is_pad: np.ndarray  # (N, Ta) bool, step at or after the episode end

    def __len__(self) -> int:
        return len(self.step)


def _check_ends(episode_ends: np.ndarray) -> np.ndarray:
    ends = np.asarray(episode_ends)
    if ends.ndim != 1 or len(ends) == 0 or not np.issubdtype(ends.dtype, np.integer):
        raise ValueError(f"episode_ends must be a non-empty 1-D integer array, got {ends!r}")
    if (np.diff(ends, prepend=0) < 1).any():
        raise ValueError(f"episode_ends must increase strictly from >= 1 (episodes of >= 1 step), got {ends}")
    return ends.astype(np.int64)


def _check_episodes(episodes: Sequence[int] | np.ndarray | None, n_episodes: int) -> np.ndarray:
    if episodes is None:
        return np.arange(n_episodes)
    ids = np.asarray(episodes, dtype=np.int64).reshape(-1)
    if len(ids) == 0:
        raise ValueError("no episodes selected: the dataset would be empty")
    if ids.min() < 0 or ids.max() >= n_episodes:
        bad = ids[(ids < 0) | (ids >= n_episodes)]
        raise ValueError(f"episode ids {bad.tolist()} out of range [0, {n_episodes})")
    return ids


def window_indices(episode_ends: np.ndarray, t_obs: int, t_act: int,
                   episodes: Sequence[int] | np.ndarray | None = None) -> WindowIndex:
    """Windows for every step of the selected episodes (all by default), in episode order.

    episode_ends: (E,) exclusive end step of every episode; t_obs/t_act: To/Ta >= 1.
    """
    if t_obs < 1 or t_act < 1:
        raise ValueError(f"horizons must be >= 1, got t_obs={t_obs}, t_act={t_act}")
    ends = _check_ends(episode_ends)
    ids = _check_episodes(episodes, len(ends))
    starts = episode_starts(ends)
    lengths = (ends - starts)[ids]
    ep_start = np.repeat(starts[ids], lengths)  # (N,)
    ep_end = np.repeat(ends[ids], lengths)  # (N,)
    first_sample = np.cumsum(lengths) - lengths
    step = ep_start + np.arange(lengths.sum()) - np.repeat(first_sample, lengths)  # (N,)
    obs_raw = step[:, None] + np.arange(-t_obs + 1, 1)  # (N, To)
    obs_is_pad = obs_raw < ep_start[:, None]
    obs = np.maximum(obs_raw, ep_start[:, None])
    prev_action_is_pad = obs == ep_start[:, None]
    prev_action = np.where(prev_action_is_pad, 0, obs - 1)
    act_raw = step[:, None] + np.arange(t_act)  # (N, Ta)
    action_is_pad = act_raw >= ep_end[:, None]
    action = np.minimum(act_raw, ep_end[:, None] - 1)
    return WindowIndex(step, obs, obs_is_pad, prev_action, prev_action_is_pad, action, action_is_pad)


def split_episodes(n_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/val split by episode: sorted (train_ids, val_ids), disjoint, covering range(E).

    val = round(E * val_fraction) episodes, at least 1 when val_fraction > 0; train keeps at least 1.
    """
    if n_episodes < 1:
        raise ValueError(f"need at least 1 episode to split, got n_episodes={n_episodes}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = max(1, round(n_episodes * val_fraction)) if val_fraction > 0 else 0
    if n_val > n_episodes - 1:
        raise ValueError(f"cannot hold out {n_val} of {n_episodes} episodes for validation and keep one for "
                         "training: record more episodes or set val_fraction=0")
    perm = np.random.default_rng(seed).permutation(n_episodes)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Sample indices of this rank's shard of the global batch at ``step``: a pure function of its inputs.

    Epoch e = step // (n // batch_size) walks a permutation of range(n) drawn from (seed, e), dropping the
    last partial batch; rank r takes the r-th contiguous shard of each global batch.
    """
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} training windows")
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be divisible by the {world} DDP processes")
    per_epoch = n // batch_size
    epoch, j = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    batch = perm[j * batch_size : (j + 1) * batch_size]
    shard = batch_size // world
    return batch[rank * shard : (rank + 1) * shard]


class WindowDataset(torch.utils.data.Dataset):
    """Windows over in-memory per-step arrays; one sample per step of the selected episodes.

    Items (and `get_batch` with a leading B): `feat_<camera>` (To, F) float32 for every key starting with
    "feat_", `proprio` (To, P), `prev_action` (To, A), `obs_is_pad` (To,) bool, `prev_action_is_pad`
    (To,) bool, `action` (Ta, A), `action_is_pad` (Ta,) bool; all float tensors are float32.

    Targets come from `action_key` (the labels); the previous action from its executed twin
    (`<action_key>_executed`, the action actually stepped under noise injection) when the data has one: a
    rollout feeds the policy what it executed, so training does too.

    With `views` ({feat_<camera>: (T, n, F)}, shifted views of the frames: `s2robot.data.views`), `get_batch` given
    `view` (B,) reads view `view[b]` for sample b (the same for all To steps and every camera) in place of its
    features, where `view[b]` ≥ 0; without `view` (validation) the rendered frames' features only.
    """

    def __init__(self, data: Mapping[str, np.ndarray], episode_ends: np.ndarray,
                 episodes: Sequence[int] | np.ndarray | None = None, t_obs: int = 16, t_act: int = 16,
                 proprio_key: str = "proprio", action_key: str = "action",
                 views: Mapping[str, np.ndarray] | None = None) -> None:
        """data: {key: (T, ...)} with T = episode_ends[-1]; needs `proprio_key`, `action_key`, feat_* keys."""
        self.index = window_indices(episode_ends, t_obs, t_act, episodes)
        self.episode_ends = _check_ends(episode_ends)
        self.t_obs, self.t_act = t_obs, t_act
        n_steps = int(np.asarray(episode_ends)[-1])
        for key in (proprio_key, action_key):
            if key not in data:
                raise ValueError(f"data has no {key!r} key; keys: {sorted(data)}")
        self.feature_keys = feat_keys(data)
        self.obs_keys = (*self.feature_keys, proprio_key)
        self.proprio_key, self.action_key = proprio_key, action_key
        executed = action_key + EXECUTED_SUFFIX
        self.prev_action_key = executed if executed in data else action_key
        self.data: dict[str, np.ndarray] = {}
        for key in dict.fromkeys((*self.obs_keys, action_key, self.prev_action_key)):
            arr = np.asarray(data[key])
            if arr.ndim < 1 or len(arr) != n_steps:
                raise ValueError(f"{key}: expected {n_steps} steps (episode_ends[-1]), got shape {arr.shape}")
            self.data[key] = arr
        self.views = dict(views or {})
        if len({arr.shape[1] if arr.ndim == 3 else None for arr in self.views.values()}) > 1:
            raise ValueError(f"every camera needs the same number of views; got "
                             f"{ {k: v.shape for k, v in self.views.items()} }")
        for key, arr in self.views.items():
            want = (n_steps, self.data[key].shape[1]) if key in self.data else None
            if want is None or arr.ndim != 3 or (arr.shape[0], arr.shape[2]) != want:
                have = self.data[key].shape if key in self.data else "that do not exist"
                raise ValueError(f"views of {key}: expected (T={n_steps}, n, F) beside features {have}, "
                                 f"got {arr.shape}")

    @classmethod
    def from_store(cls, store: EpisodeStore, episodes: Sequence[int] | np.ndarray | None = None,
                   keys: Sequence[str] | None = None, t_obs: int = 16, t_act: int = 16,
                   proprio_key: str = "proprio", action_key: str = "action") -> WindowDataset:
        """Load `keys` (default: every key except rgb_*) of `store` into memory and build the dataset."""
        if store.n_episodes == 0:
            raise ValueError(f"{store.path} has no episodes: the dataset would be empty")
        keys = [k for k in store.keys if not is_rgb(k)] if keys is None else list(keys)
        data = {k: store.get_steps(k, 0, store.n_steps) for k in keys}
        return cls(data, store.episode_ends, episodes, t_obs, t_act, proprio_key, action_key)

    def __len__(self) -> int:
        return len(self.index)

    def get_batch(self, indices: Sequence[int] | np.ndarray, view: np.ndarray | None = None
                  ) -> dict[str, torch.Tensor]:
        """Samples `indices` (B,) stacked: {key: (B, To|Ta, ...)}, by vectorised numpy gathers; `view` (B,): which
        shifted view each sample reads, -1 for none (see the class docstring and ``s2robot.data.views.draw_views``)."""
        i = np.asarray(indices, dtype=np.int64)
        if i.ndim != 1 or (len(i) and (i.min() < -len(self) or i.max() >= len(self))):
            raise IndexError(f"indices must be 1-D within [-{len(self)}, {len(self)}), got {indices}")
        ix = self.index
        out = {k: self.data[k][ix.obs[i]] for k in self.obs_keys}  # (B, To, ...)
        if self.views and view is not None:
            view = np.asarray(view, dtype=np.int64)
            n_views = next(iter(self.views.values())).shape[1]
            if view.shape != i.shape or view.max(initial=-1) >= n_views:
                raise ValueError(f"view must be one of -1 … {n_views - 1} per sample ({len(i)}), got {view}")
            rows = np.flatnonzero(view >= 0)
            for k, v in self.views.items():
                out[k][rows] = v[ix.obs[i[rows]], view[rows, None]]  # (b, To, F); out[k] is a gathered copy
        prev_pad = ix.prev_action_is_pad[i]  # (B, To)
        prev = self.data[self.prev_action_key][ix.prev_action[i]]  # (B, To, A)
        prev = np.where(prev_pad.reshape(*prev_pad.shape, *[1] * (prev.ndim - 2)), 0, prev)
        out |= {"prev_action": prev, "action": self.data[self.action_key][ix.action[i]]}  # (B, Ta, A)
        batch = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}
        for name in ("obs_is_pad", "prev_action_is_pad", "action_is_pad"):
            batch[name] = torch.from_numpy(getattr(ix, name)[i])
        return batch

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        """One sample: {key: (To|Ta, ...)} (``get_batch`` of one index, without the batch axis)."""
        if not -len(self) <= idx < len(self):
            raise IndexError(f"sample {idx} out of range [0, {len(self)})")
        return {k: v[0] for k, v in self.get_batch([idx]).items()}
