"""Per-key affine normalization of policy inputs and outputs, fit on the training split.

``x_norm = (x - offset) / scale`` per channel. Two modes, as in Diffusion Policy / ACT:

- ``gaussian``: offset = mean, scale = std (features, proprio, actions for an L1/MSE head);
- ``limits``: offset = (max + min) / 2, scale = (max - min) / 2, mapping [min, max] to [-1, 1].

A channel that never varies (std or range below ``eps``) gets scale 1, so it maps to 0 and inverts
exactly instead of blowing up. The statistics are buffers of an ``nn.Module``: they travel with the policy's
state dict (and so with every checkpoint) and move with it between devices.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

MODES = ("gaussian", "limits")


class _Affine(nn.Module):
    def __init__(self, offset: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)


class Normalizer(nn.Module):
    """Affine maps per key; ``normalize(key, x)`` and ``unnormalize(key, x)`` act on the last axis of x."""

    def __init__(self, stats: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """stats: {key: (offset (D,), scale (D,))}; empty for an identity normalizer that knows no keys."""
        super().__init__()
        self.stats = nn.ModuleDict()
        for key, (offset, scale) in (stats or {}).items():
            offset = torch.as_tensor(offset, dtype=torch.float32).reshape(-1)
            scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
            if offset.shape != scale.shape:
                raise ValueError(f"{key}: offset {tuple(offset.shape)} and scale {tuple(scale.shape)} differ")
            if not (torch.isfinite(offset).all() and torch.isfinite(scale).all() and (scale > 0).all()):
                raise ValueError(f"{key}: normalization statistics must be finite with scale > 0")
            self.stats[key] = _Affine(offset, scale)

    @classmethod
    def fit(cls, data: Mapping[str, np.ndarray | torch.Tensor], mode: str | Mapping[str, str] = "gaussian",
            eps: float = 1e-4) -> Normalizer:
        """Statistics of ``data`` {key: (T, D)} over all T rows; ``mode`` per key or one for all."""
        stats = {}
        for key, values in data.items():
            m = mode if isinstance(mode, str) else mode[key]
            if m not in MODES:
                raise ValueError(f"normalization mode must be one of {MODES}, got {m!r} for {key!r}")
            x = torch.as_tensor(np.asarray(values), dtype=torch.float64)
            x = x.reshape(len(x), -1)  # (T, D)
            if len(x) == 0:
                raise ValueError(f"cannot fit normalization of {key!r} on 0 rows")
            if not torch.isfinite(x).all():
                raise ValueError(f"{key!r} holds NaN or inf values; fix the data before fitting a normalizer")
            if m == "gaussian":
                offset, scale = x.mean(0), x.std(0, correction=0)
            else:
                lo, hi = x.min(0).values, x.max(0).values
                offset, scale = (hi + lo) / 2, (hi - lo) / 2
            scale = torch.where(scale < eps, torch.ones_like(scale), scale)
            stats[key] = (offset.float(), scale.float())
        return cls(stats)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> Normalizer:
        """Rebuild from ``state_dict()`` entries ``{prefix}stats.<key>.offset|scale`` (checkpoint loading)."""
        head = f"{prefix}stats."
        keys = sorted({k[len(head):].rsplit(".", 1)[0] for k in state_dict if k.startswith(head)})
        return cls({k: (state_dict[f"{head}{k}.offset"], state_dict[f"{head}{k}.scale"]) for k in keys})

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.stats.keys())

    def _affine(self, key: str, x: torch.Tensor) -> _Affine:
        if key not in self.stats:
            raise KeyError(f"the normalizer has no statistics for {key!r}; it knows {list(self.stats)}")
        affine = self.stats[key]
        if x.shape[-1] != affine.offset.shape[0]:
            raise ValueError(f"{key}: last axis {x.shape[-1]} ≠ the normalizer's {affine.offset.shape[0]} "
                             "channels (was the checkpoint trained on other data?)")
        return affine

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """(..., D) raw → (..., D) normalized."""
        a = self._affine(key, x)
        return (x - a.offset) / a.scale

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """(..., D) normalized → (..., D) raw."""
        a = self._affine(key, x)
        return x * a.scale + a.offset
