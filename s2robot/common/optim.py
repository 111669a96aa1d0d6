"""Pieces shared by the training loops (BC in ``s2robot.workflows.train``, MAE in ``s2robot.workflows.pretrain``):
the learning-rate schedule, AdamW parameter groups, an EMA of weights and atomic saves."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s2robot.common.atomic import replacing

NO_DECAY_NAMES = ("cls_token", "mask_token")


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warmup to 1 over ``warmup_steps``, then cosine to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices, none on biases, norms and CLS/mask tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name.endswith(NO_DECAY_NAMES) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class EMA:
    """Exponential moving average of a module's parameters and buffers (decay warms up as in timm)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.state[k].lerp_(v.detach(), 1.0 - d)
            else:
                self.state[k].copy_(v)


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """Write atomically (a new, uniquely named temp file beside ``path``, then a rename): a crash mid-save never
    corrupts the previous checkpoint, and no other file beside it is ever overwritten."""
    with replacing(path) as tmp:
        torch.save(dict(payload), tmp)
