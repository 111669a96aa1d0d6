"""Camera frames as the ViT takes them: uint8 ``(B, H, W, 3)`` → float ``(B, 3, H, W)``, ImageNet-normalized."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB in [0, 1], as MVP and timm normalize
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, S, S, 3) → float32 (B, 3, S, S) in [0, 1] on ``device``."""
    return frames.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


def imagenet_normalize(x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] → ImageNet-normalized; ``inverse`` maps back."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return x * std + mean if inverse else (x - mean) / std
