"""Masked autoencoder (MAE) of our ViT, as MVP trained its encoders (the training loop: ``s2robot.workflows.pretrain``).

He et al., "Masked Autoencoders Are Scalable Vision Learners" (github facebookresearch/mae,
``models_mae.py``), which MVP (Xiao et al. 2022) used on in-the-wild frames: the ViT encoder sees only
the visible 25% of the patches of each image (random per image), a light transformer decoder with its own
width and depth fills in mask tokens, and the loss is the MSE on per-patch-normalized pixels of the masked
patches only. Position tables are fixed 2-D sin-cos, as in MAE.

Parameter names follow MAE's checkpoints: the encoder's are timm's (``patch_embed.*``, ``blocks.N.*``, ...,
under ``encoder.`` here), the decoder's start with ``decoder_`` and ``mask_token`` — exactly the keys that
``s2robot.vision.weights`` ignores when it loads an MAE/MVP checkpoint into a ``VisionTransformer``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from einops import rearrange
from torch import nn

from s2robot.vision.vit import Block, VisionTransformer, ViTConfig, get_config

# Decoder (width, depth, heads) per encoder size. MAE's default is 512-d × 8 for ViT-B/L; smaller encoders
# get proportionally lighter decoders so that pretraining stays dominated by the encoder.
DECODER_SIZES: dict[int, tuple[int, int, int]] = {
    32: (16, 1, 2),  # vit-micro (tests)
    192: (128, 3, 4),  # vitti
    384: (256, 4, 8),  # ViT-S
    768: (512, 8, 16),  # ViT-B
    1024: (512, 8, 16),  # ViT-L
}


@dataclass
class MAEConfig:
    """An MAE around a registry ViT.

    variant: ViT registry name of the encoder (``s2robot.vision.vit.VARIANTS``)
    mask_ratio: share of each image's patches hidden from the encoder (MAE/MVP: 0.75)
    decoder_dim, decoder_depth, decoder_heads: decoder size; None = ``DECODER_SIZES`` for the encoder width
    norm_pix_loss: regress per-patch-normalized pixels (MAE's better-representations setting)
    """

    variant: str = "vitti"
    mask_ratio: float = 0.75
    decoder_dim: int | None = None
    decoder_depth: int | None = None
    decoder_heads: int | None = None
    norm_pix_loss: bool = True

    def __post_init__(self) -> None:
        vit = get_config(self.variant)  # raises with the list of variants
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1); got {self.mask_ratio}")
        if int(vit.num_patches * (1 - self.mask_ratio)) < 1:
            raise ValueError(f"mask_ratio {self.mask_ratio} leaves no visible patch of {vit.num_patches}")
        dim, _, heads = self.decoder_size()
        if dim % heads or dim % 4:
            raise ValueError(f"decoder_dim {dim} must be divisible by 4 and by decoder_heads {heads}")

    def decoder_size(self) -> tuple[int, int, int]:
        """(width, depth, heads) of the decoder."""
        width = get_config(self.variant).embed_dim
        default = DECODER_SIZES.get(width, (512, 8, 16))
        return (self.decoder_dim or default[0], self.decoder_depth or default[1], self.decoder_heads or default[2])


class MAEOutput(NamedTuple):
    """loss: scalar; pred: (B, N, p*p*3) predicted (normalized) patches; mask: (B, N), 1 = masked."""

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor


# ----------------------------------------------------------------------------------------- pure helpers
def sincos_pos_embed(dim: int, grid: int, cls_token: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos position table ``(1, [1+] grid², dim)``; the CLS row is zeros."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (dim/4,)
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for pos in (xs.flatten(), ys.flatten()):  # MAE: first half from one axis, second half from the other
        angles = pos[:, None].double() * omega[None]  # (n, dim/4)
        parts += [angles.sin(), angles.cos()]
    table = torch.cat(parts, dim=1).float()  # (n, dim)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim), table])
    return table[None]


def patchify(imgs: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, 3, H, W) -> (B, N, p*p*3)``, patches row-major, pixels (p, q, c) within a patch."""
    return rearrange(imgs, "b c (h p) (w q) -> b (h w) (p q c)", p=patch, q=patch)


def unpatchify(patches: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of ``patchify`` for a square grid: ``(B, N, p*p*3) -> (B, 3, H, W)``."""
    grid = math.isqrt(patches.shape[1])
    return rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=grid, p=patch, q=patch)


def random_masking(
    tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep ``int(N * (1 - mask_ratio))`` tokens of every image: those with the smallest ``noise``.

    tokens: (B, N, D); noise: (B, N), e.g. uniform. Returns the kept tokens (B, n_keep, D) in shuffled
    order, the mask (B, N) with 1 = masked in the original order, and ``ids_restore`` (B, N) which
    ``restore_order`` uses to undo the shuffle.
    """
    b, n, d = tokens.shape
    n_keep = int(n * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)  # (B, N) ascending: the first n_keep are kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, N)
    ids_keep = ids_shuffle[:, :n_keep]
    kept = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, d))  # (B, n_keep, D)
    mask = torch.ones(b, n, device=tokens.device)
    mask[:, :n_keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


def restore_order(kept: torch.Tensor, ids_restore: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
    """Put kept tokens ``(B, n_keep, D)`` back at their positions, ``mask_token`` (1, 1, D) elsewhere."""
    b, n_keep, d = kept.shape
    n = ids_restore.shape[1]
    full = torch.cat([kept, mask_token.to(kept.dtype).expand(b, n - n_keep, d)], dim=1)  # (B, N, D) shuffled
    return torch.gather(full, 1, ids_restore[..., None].expand(-1, -1, d))  # (B, N, D)


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch zero mean, unit variance (MAE's ``norm_pix_loss`` target)."""
    mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


# ---------------------------------------------------------------------------------------------- model
class MaskedAutoencoder(nn.Module):
    """``MaskedAutoencoder(cfg)(imgs) -> MAEOutput``; ``imgs`` are normalized ``(B, 3, S, S)`` float."""

    def __init__(self, cfg: MAEConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        vit = get_config(cfg.variant)
        self.patch_size = vit.patch_size
        self.encoder = VisionTransformer(vit)
        dim, depth, heads = cfg.decoder_size()
        dec = ViTConfig(img_size=vit.img_size, patch_size=vit.patch_size, embed_dim=dim, depth=depth,
                        num_heads=heads, norm_eps=vit.norm_eps)
        self.decoder_embed = nn.Linear(vit.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(dim, vit.grid_size), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(dec) for _ in range(depth)])
        self.decoder_norm = nn.LayerNorm(dim, eps=vit.norm_eps)
        self.decoder_pred = nn.Linear(dim, vit.patch_size**2 * vit.in_chans)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """MAE's init: xavier-uniform linears and patch projection, N(0, 0.02) tokens, fixed sin-cos tables."""
        enc = self.encoder
        with torch.no_grad():
            enc.pos_embed.copy_(sincos_pos_embed(enc.embed_dim, enc.cfg.grid_size))
        enc.pos_embed.requires_grad_(False)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        proj = enc.patch_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1), generator=generator)
        nn.init.zeros_(proj.bias)
        for token in (enc.cls_token, self.mask_token):
            nn.init.normal_(token, std=0.02, generator=generator)

    @property
    def num_patches(self) -> int:
        return self.encoder.cfg.num_patches

    def forward_encoder(
        self, imgs: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches: latent (B, 1+n_keep, D), mask (B, N), ids_restore (B, N)."""
        enc = self.encoder
        x = enc.patch_embed(imgs) + enc.pos_embed[:, 1:]  # (B, N, D)
        x, mask, ids_restore = random_masking(x, self.cfg.mask_ratio, noise)  # (B, n_keep, D)
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1)  # (B, 1+n_keep, D)
        for block in enc.blocks:
            x = block(x)
        return enc.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict every patch's pixels: (B, 1+n_keep, D) -> (B, N, p*p*3)."""
        x = self.decoder_embed(latent)  # (B, 1+n_keep, Dd)
        patches = restore_order(x[:, 1:], ids_restore, self.mask_token)  # (B, N, Dd)
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed  # (B, 1+N, Dd)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]  # (B, N, p*p*3)

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """What the decoder regresses: (B, N, p*p*3) patches, per-patch normalized if ``norm_pix_loss``."""
        patches = patchify(imgs.float(), self.patch_size)
        return normalize_patches(patches) if self.cfg.norm_pix_loss else patches

    def loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE over the masked patches only (mean over pixels, then over masked patches)."""
        per_patch = ((pred.float() - self.target(imgs)) ** 2).mean(dim=-1)  # (B, N)
        return (per_patch * mask).sum() / mask.sum()

    def forward(
        self, imgs: torch.Tensor, noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
        target: torch.Tensor | None = None,
    ) -> MAEOutput:
        """imgs: normalized (B, 3, S, S); noise (B, N) picks the masks (default: uniform from ``generator``).

        target: normalized (B, 3, S, S) images to reconstruct instead of ``imgs`` (the same scene rendered another
        way, e.g. as built while ``imgs`` is varied); then every patch is scored, visible ones too, so the encoder
        must also say what the patches it sees look like in the target.
        """
        if noise is None:
            noise = torch.rand(imgs.shape[0], self.num_patches, generator=generator).to(imgs.device)
        latent, mask, ids_restore = self.forward_encoder(imgs, noise)
        pred = self.forward_decoder(latent, ids_restore)
        if target is None:
            return MAEOutput(self.loss(imgs, pred, mask), pred, mask)
        return MAEOutput(self.loss(target, pred, torch.ones_like(mask)), pred, mask)

    def reconstruct(self, imgs: torch.Tensor, out: MAEOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (B, 3, S, S) in ``imgs``' space: masked input, prediction, prediction with visible pasted.

        With ``norm_pix_loss`` the prediction is de-normalized with each true patch's mean and std, as MAE's
        visualisation does (the model predicts structure, not a patch's mean colour).
        """
        patches = patchify(imgs.float(), self.patch_size)  # (B, N, P)
        pred = out.pred.float()
        if self.cfg.norm_pix_loss:
            mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
            pred = pred * (var + 1e-6).sqrt() + mean
        m = out.mask[..., None]  # (B, N, 1)
        masked = unpatchify(patches * (1 - m), self.patch_size)
        return masked, unpatchify(pred, self.patch_size), unpatchify(patches * (1 - m) + pred * m, self.patch_size)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights with timm key names (what an MVP checkpoint holds under ``"model"``)."""
        return {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
