"""Names of per-step keys and episode bounds: the one place the ``rgb_<camera>`` / ``feat_<camera>`` literals live."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

RGB_PREFIX = "rgb_"  # camera frames (T, S, S, 3) uint8
FEAT_PREFIX = "feat_"  # frozen-encoder features (T, F)
EXECUTED_SUFFIX = "_executed"  # the action actually stepped (noise injection: label + noise), beside its label
PRIVILEGED_CUBE = "cube_pos"  # (T, 3) cube centre [m]: privileged state, read only by the oracle encoder

# The action spaces a demo store records, as (label key, executed key): what the policy learns to predict and
# what it was fed as its previous action (the executed one, which is what a rollout feeds it too).
ACTION_SPACES = {"delta": ("action", "action" + EXECUTED_SUFFIX),  # (T, 8) joint deltas [rad] + gripper
                 "absolute": ("target", "target" + EXECUTED_SUFFIX)}  # (T, 8) joint targets [rad] + gripper


def rgb_key(camera: str) -> str:
    return RGB_PREFIX + camera


def feat_key(camera: str) -> str:
    return FEAT_PREFIX + camera


def is_rgb(key: str) -> bool:
    return key.startswith(RGB_PREFIX)


def is_feat(key: str) -> bool:
    return key.startswith(FEAT_PREFIX)


def rgb_cameras(keys: Iterable[str]) -> list[str]:
    """Camera names of the ``rgb_<camera>`` keys, in key order."""
    return [k.removeprefix(RGB_PREFIX) for k in keys if is_rgb(k)]


def feat_cameras(keys: Iterable[str]) -> list[str]:
    """Camera names of the ``feat_<camera>`` keys, in key order."""
    return [k.removeprefix(FEAT_PREFIX) for k in keys if is_feat(k)]


def feat_keys(keys: Iterable[str]) -> tuple[str, ...]:
    """The sorted ``feat_<camera>`` keys."""
    return tuple(sorted(k for k in keys if is_feat(k)))


def episode_starts(episode_ends: np.ndarray) -> np.ndarray:
    """(E,) first step of every episode from its (E,) exclusive ends."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    return np.concatenate([[0], ends[:-1]]).astype(np.int64)
