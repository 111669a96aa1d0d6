"""The oracle "encoder": privileged state in place of vision, to measure the recipe's ceiling without it.

Per step its feature is the cube centre (3,) [m] and the gripper opening (1,) [m] — what a perfect cube detector
plus the gripper state would give — under the pseudo-camera ``oracle`` (key ``feat_oracle``). With
``oracle_noise`` > 0 every episode's cube position is off by a constant offset drawn from N(0, oracle_noise²) in
x and in y (a detector with a systematic error; the table fixes the height), keyed by the episode's seed, so the
same episode gets the same offset in the feature cache and in evaluation whatever the batching.

It is labelled PRIVILEGED in every description, so no result made with it can pass for a vision result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

ORACLE = "oracle"  # EncoderConfig.variant of the oracle, and its pseudo-camera (feature key feat_oracle)
ORACLE_DIM = 4  # cube centre (3) + gripper opening (1)
ORACLE_VERSION = 1


class _PrivilegedWeights:
    """What stands where an encoder's weights would: no weights, privileged state."""

    source = "privileged"
    digest = "privileged-state"
    path = None
    is_random = False

    def label(self) -> str:
        return "PRIVILEGED state (oracle: cube position + gripper, not vision)"


class OracleEncoder:
    """Privileged features from the cube position and proprio; see the module docstring."""

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        """noise: std of the per-episode cube-position offset [m]; seed: its random stream."""
        if not noise >= 0:
            raise ValueError(f"oracle noise must be ≥ 0 [m], got {noise}")
        self.noise, self.seed = float(noise), int(seed)
        self.weights = _PrivilegedWeights()
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.img_sizes: list[int] = []
        self.feature_dim = ORACLE_DIM

    @property
    def fingerprint(self) -> str:
        key = {"oracle": ORACLE_VERSION, "noise": self.noise, "seed": self.seed if self.noise else None}
        return "oracle-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:9]

    def offset(self, episode_seed: int) -> np.ndarray:
        """(3,) the cube-position error of the episode with this seed [m]: x and y only (zeros without noise)."""
        if not self.noise:
            return np.zeros(3)
        return np.r_[np.random.default_rng([self.seed, int(episode_seed), 0x0AC1E]).normal(0.0, self.noise, 2), 0.0]

    def features(self, cube_pos: np.ndarray, proprio: np.ndarray, episode_seeds: Sequence[int]) -> np.ndarray:
        """cube_pos (N, 3) [m], proprio (N, 8), one episode seed per row → features (N, 4) float32."""
        cube_pos, proprio = np.asarray(cube_pos, np.float64), np.asarray(proprio, np.float64)
        if cube_pos.shape[-1] != 3 or proprio.shape[-1] < 1 or not len(cube_pos) == len(proprio) == len(episode_seeds):
            raise ValueError(f"oracle features need cube_pos (N, 3), proprio (N, P) and N episode seeds; got "
                             f"{cube_pos.shape}, {proprio.shape}, {len(episode_seeds)}")
        seeds, rows = np.unique(np.asarray(episode_seeds, dtype=np.int64), return_inverse=True)
        offsets = np.stack([self.offset(s) for s in seeds] or [np.zeros(3)])[rows.reshape(-1)]  # one draw per episode
        return np.concatenate([cube_pos + offsets, proprio[:, -1:]], axis=1).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance, as ``FrozenS2Encoder.describe``; ``privileged`` is True."""
        return {"fingerprint": self.fingerprint, "variant": ORACLE, "privileged": True,
                "weights": self.weights.label(), "weights_random": False, "weights_digest": self.weights.digest,
                "img_sizes": [], "readout": f"cube position (noise {100 * self.noise:g} cm) + gripper",
                "feature_dim": ORACLE_DIM, "params": 0, "gflops_per_frame": 0.0,
                "config": {"variant": ORACLE, "oracle_noise": self.noise, "seed": self.seed}}
