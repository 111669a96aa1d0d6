"""Vision Transformer backbone with timm-compatible parameter names, and the MVP variant registry.

The state-dict keys and shapes are exactly those of timm's ``VisionTransformer`` (``cls_token``,
``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``,
``norm.*``), so an official MVP checkpoint loads with no renaming. Unlike MVP's own forward, which returns
only the normed CLS token, ``forward`` returns every token after the final norm: S² needs the patch grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a ViT. All MVP variants: mlp ratio 4, qkv bias, LayerNorm eps 1e-6.

    img_size: side of the square input the position grid is built for [px]
    patch_size: side of a square patch [px]
    """

    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    in_chans: int = 3

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}; "
                "pick an image size divisible by the patch size"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


# MVP's released encoders (github ir413/mvp, mvp/backbones): ViT-S has 12 heads, not timm's usual 6.
_VIT_S = ViTConfig(embed_dim=384, depth=12, num_heads=12)
_VIT_B = ViTConfig(embed_dim=768, depth=12, num_heads=12)
_VIT_L_256 = ViTConfig(img_size=256, embed_dim=1024, depth=24, num_heads=16)

VARIANTS: dict[str, ViTConfig] = {
    "vits-mae-hoi": _VIT_S,
    "vits-mae-in": _VIT_S,
    "vits-sup-in": _VIT_S,
    "vitb-mae-egosoup": _VIT_B,
    "vitl-256-mae-egosoup": _VIT_L_256,
    # Not MVP releases: small ViTs for CPU runs and tests (random or self-pretrained weights only).
    "vitti": ViTConfig(embed_dim=192, depth=12, num_heads=3),
    # ViT-Ti/16 MAE-pretrained on rendered cube-pick frames (scripts/pretrain_mae.py); ships in weights/.
    "vitti-mae-cubepick": ViTConfig(embed_dim=192, depth=12, num_heads=3),
    # The same, pretrained with S² (scripts/pretrain_mae.py s2_img_sizes=[224,448]); ships in weights/.
    "vitti-s2mae-cubepick": ViTConfig(embed_dim=192, depth=12, num_heads=3),
    # ViT-Ti/16 at 112² (S² 112²+224² of the 224² camera frames costs 4.4× less than 224²+448²), and the same
    # pretrained with S² tiles of 112²+224² (scripts/pretrain_mae.py model.variant=vitti-112 ...); ships in weights/.
    "vitti-112": ViTConfig(img_size=112, embed_dim=192, depth=12, num_heads=3),
    "vitti-112-s2mae-cubepick": ViTConfig(img_size=112, embed_dim=192, depth=12, num_heads=3),
    # vitti-112-s2mae-cubepick distilled to give, for a frame of a varied scene, its tokens of the same state in the
    # scene as built (scripts/distill_invariance.py); ships in weights/.
    "vitti-112-invariant-cubepick": ViTConfig(img_size=112, embed_dim=192, depth=12, num_heads=3),
    # The same recipe at MVP's sizes (ViT-S ships in weights/; ViT-B and ViT-L are trained on a GPU).
    "vits-mae-cubepick": _VIT_S,
    "vitb-mae-cubepick": _VIT_B,
    "vitl-256-mae-cubepick": _VIT_L_256,
    "vit-micro": ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
}
MVP_VARIANTS: tuple[str, ...] = (
    "vits-mae-hoi",
    "vits-mae-in",
    "vits-sup-in",
    "vitb-mae-egosoup",
    "vitl-256-mae-egosoup",
)


def get_config(variant: str, img_size: int | None = None) -> ViTConfig:
    """The registry entry for ``variant``, optionally with another input size."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ViT variant {variant!r}; available: {sorted(VARIANTS)}")
    cfg = VARIANTS[variant]
    return cfg if img_size is None else replace(cfg, img_size=img_size)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, h, w)
        return rearrange(x, "b d h w -> b (h w) d")  # (B, N, D)


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = rearrange(self.qkv(x), "b n (k h e) -> k b h n e", k=3, h=self.num_heads)  # (3, B, H, N, E)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, N, E)
        return self.proj(rearrange(x, "b h n e -> b n (h e)"))


class Mlp(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.embed_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT returning all tokens after the final norm: ``(B, 3, S, S) -> (B, 1+N, D)``, CLS first."""

    num_prefix_tokens = 1

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, cfg.embed_dim))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.reset_parameters()

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """timm-style init (truncated normal, std 0.02); deterministic given ``generator``."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            else:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans or x.shape[-2:] != (self.cfg.img_size,) * 2:
            raise ValueError(
                f"expected images (B, {self.cfg.in_chans}, {self.cfg.img_size}, {self.cfg.img_size}), "
                f"got {tuple(x.shape)}; resize the input or build the model with another img_size"
            )
        x = self.patch_embed(x)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, 1+N, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    @staticmethod
    def cls_tokens(tokens: torch.Tensor) -> torch.Tensor:
        """The CLS token of ``forward``'s output: ``(B, 1+N, D) -> (B, D)``."""
        return tokens[:, 0]

    @staticmethod
    def patch_tokens(tokens: torch.Tensor) -> torch.Tensor:
        """The patch tokens of ``forward``'s output, row-major: ``(B, 1+N, D) -> (B, N, D)``."""
        return tokens[:, 1:]


def build_vit(variant: str, img_size: int | None = None) -> VisionTransformer:
    """An untrained ViT of a registry variant (load weights with ``s2robot.vision.weights``)."""
    return VisionTransformer(get_config(variant, img_size))


def resize_pos_embed(pos_embed: torch.Tensor, grid_size: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bicubically resample a ``(1, P+n*n, D)`` position table to a ``grid_size`` square grid.

    Prefix (CLS) positions are kept as they are; the patch grid is interpolated in float32.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = math.isqrt(grid.shape[1])
    if old * old != grid.shape[1]:
        raise ValueError(f"position table has {grid.shape[1]} patch positions, not a square grid")
    grid = rearrange(grid.float(), "1 (h w) d -> 1 d h w", h=old)
    grid = F.interpolate(grid, size=(grid_size, grid_size), mode="bicubic", align_corners=False)
    grid = rearrange(grid, "1 d h w -> 1 (h w) d").to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def param_count(cfg: ViTConfig) -> int:
    """Number of parameters of a ViT with this config (no head)."""
    d, hidden = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)
    block = 2 * 2 * d + (d * 3 * d + (3 * d if cfg.qkv_bias else 0)) + (d * d + d) + (d * hidden + hidden)
    block += hidden * d + d
    patch = cfg.in_chans * cfg.patch_size**2 * d + d
    return patch + d + (1 + cfg.num_patches) * d + cfg.depth * block + 2 * d


def flops_per_image(cfg: ViTConfig) -> int:
    """Forward FLOPs for one image (2 per multiply-add; matmuls and attention only, as is customary)."""
    n, d, hidden = 1 + cfg.num_patches, cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)
    patch = cfg.num_patches * cfg.in_chans * cfg.patch_size**2 * d
    per_block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * hidden
    return 2 * (patch + cfg.depth * per_block)
