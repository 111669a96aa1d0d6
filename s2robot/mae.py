"""Masked autoencoder (MAE) pretraining of our ViT, as MVP trained its encoders.

He et al., "Masked Autoencoders Are Scalable Vision Learners" (github facebookresearch/mae,
``models_mae.py``), which MVP (Xiao et al. 2022) used on in-the-wild frames: the ViT encoder sees only
the visible 25% of the patches of each image (random per image), a light transformer decoder with its own
width and depth fills in mask tokens, and the loss is the MSE on per-patch-normalized pixels of the masked
patches only. Position tables are fixed 2-D sin-cos, as in MAE.

Parameter names follow MAE's checkpoints: the encoder's are timm's (``patch_embed.*``, ``blocks.N.*``, ...,
under ``encoder.`` here), the decoder's start with ``decoder_`` and ``mask_token`` — exactly the keys that
``s2robot.weights`` ignores when it loads an MAE/MVP checkpoint into a ``VisionTransformer``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import imageio.v3 as imageio
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from tqdm import tqdm

from s2robot.encoder import IMAGENET_MEAN, IMAGENET_STD, resolve_device
from s2robot.frames import FrameDataConfig, load_frames
from s2robot.optim import lr_factor, param_groups, save_checkpoint
from s2robot.vit import Block, VisionTransformer, ViTConfig, get_config
from s2robot.weights import file_sha256

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

    variant: ViT registry name of the encoder (``s2robot.vit.VARIANTS``)
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
        self, imgs: torch.Tensor, noise: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> MAEOutput:
        """imgs: normalized (B, 3, S, S); noise (B, N) picks the masks (default: uniform from ``generator``)."""
        if noise is None:
            noise = torch.rand(imgs.shape[0], self.num_patches, generator=generator).to(imgs.device)
        latent, mask, ids_restore = self.forward_encoder(imgs, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return MAEOutput(self.loss(imgs, pred, mask), pred, mask)

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


# ---------------------------------------------------------------------------------------- pretraining
@dataclass
class PretrainConfig:
    """``scripts/pretrain_mae.py``: MAE pretraining on in-domain frames. Hydra: ``configs/pretrain_mae.yaml``.

    name: run name; checkpoints, logs and reconstructions go to ``runs/<name>/``
    steps, batch_size: optimizer steps and images per step
    lr, min_lr: peak and final learning rate (AdamW; linear warmup for ``warmup_steps``, then cosine)
    weight_decay, betas: AdamW's (MAE: 0.05, (0.9, 0.95)); no decay on biases, norms and tokens
    crop_scale, crop_ratio: random-resized-crop area share and aspect-ratio ranges (MAE: (0.2, 1), (3/4, 4/3))
    hflip: random horizontal flips (MAE: on; off by default here: left and right matter to a robot)
    device: ``auto`` (CUDA when present), ``cpu``, ``cuda``
    amp: ``bfloat16`` autocast or ``none``; ``auto`` = bfloat16 (on CPUs with AVX512-BF16/AMX it is faster too)
    threads: torch CPU threads; None = torch's default
    log_every, ckpt_every, recon_every: steps between log lines, checkpoints (``last.pt``) and
        reconstruction PNGs (``recon/step_<N>.png``: original / masked / reconstruction / with visible)
    export_name: registry name to export the encoder under (e.g. ``vitti-mae-cubepick``); None = no export
    export_dir: where ``<export_name>.pth`` and ``.json`` go (``weights/`` ships with the repository)
    export_fp16: store the exported weights in float16 (half the size; loads into float32 models)
    wandb_mode: ``offline`` (default), ``online`` or ``disabled``
    """

    model: MAEConfig = field(default_factory=MAEConfig)
    data: FrameDataConfig = field(default_factory=FrameDataConfig)
    name: str = "vitti-mae-cubepick"
    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    lr: float = 5e-4
    min_lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    hflip: bool = False
    device: str = "auto"
    amp: str = "auto"
    threads: int | None = None
    log_every: int = 10
    ckpt_every: int = 100
    recon_every: int = 250
    export_name: str | None = None
    export_dir: str = "weights"
    export_fp16: bool = True
    wandb_mode: str = "offline"
    wandb_project: str = "s2robot"
    runs_dir: str = "runs"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.warmup_steps < 0:
            raise ValueError(f"need steps ≥ 1, batch_size ≥ 1, warmup_steps ≥ 0; got {self.steps}, "
                             f"{self.batch_size}, {self.warmup_steps}")
        if self.amp not in ("auto", "bfloat16", "none"):
            raise ValueError(f"amp must be 'auto', 'bfloat16' or 'none'; got {self.amp!r}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be 0 < lo ≤ hi ≤ 1; got {self.crop_scale}")
        if self.export_name is not None:
            if get_config(self.export_name) != get_config(self.model.variant):  # raises for unknown names
                raise ValueError(f"export_name {self.export_name!r} is registered with another architecture "
                                 f"than model.variant {self.model.variant!r}; register it in s2robot/vit.py")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


@dataclass
class PretrainResult:
    """losses: per step run by this call; history: every step's loss since step 0 (resumes included)."""

    run_dir: Path
    step: int
    losses: list[float]
    history: list[float]
    export_path: Path | None


def random_resized_crop(
    imgs: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hflip: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """Batched random-resized crop (+ optional flip) of ``(B, C, S, S)`` back to ``S``, bilinear."""
    b = imgs.shape[0]
    u = torch.rand(b, 5, generator=generator)  # area, log-ratio, centre x, centre y, flip
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    w = (area * log_r.exp()).sqrt().clamp(max=1.0)  # crop width / image width
    h = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx, cy = (1 - w) * (2 * u[:, 2] - 1), (1 - h) * (2 * u[:, 3] - 1)  # centres keep the crop inside
    sx = torch.where((u[:, 4] < 0.5) & hflip, -w, w)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, h, cy
    grid = F.affine_grid(theta.to(imgs.device), list(imgs.shape), align_corners=False)
    return F.grid_sample(imgs, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _normalize(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, S, S, 3) → float (B, 3, S, S) in [0, 1] on ``device``."""
    return frames.to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _imagenet(x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return x * std + mean if inverse else (x - mean) / std


@torch.no_grad()
def reconstruction_grid(model: MaskedAutoencoder, frames: torch.Tensor, seed: int = 0) -> np.ndarray:
    """One row per frame: original | masked | prediction | prediction with the visible patches pasted; uint8."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = _imagenet(_normalize(frames, device))
    out = model(x, generator=torch.Generator().manual_seed(seed))
    masked, pred, pasted = model.reconstruct(x, out)
    panels = [_imagenet(t, inverse=True).clamp(0, 1) for t in (x, masked, pred, pasted)]
    rows = torch.cat(panels, dim=3)  # (B, 3, S, 4S)
    model.train(was_training)
    return (rearrange(rows, "b c h w -> (b h) w c") * 255).round().byte().cpu().numpy()


def export_encoder(
    model: MaskedAutoencoder, path: Path, fp16: bool, provenance: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    """Write ``{"model": encoder state dict}`` (MVP format) to ``path`` and its provenance to ``.json``."""
    state = model.encoder_state_dict()
    if fp16:
        state = {k: v.half() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pth.part")
    torch.save({"model": state}, tmp)
    tmp.replace(path)
    info = provenance | {"file": path.name, "dtype": "float16" if fp16 else "float32",
                         "bytes": path.stat().st_size, "sha256": file_sha256(path)}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return path, info


def pretrain_mae(
    cfg: PretrainConfig,
    frames: np.ndarray | None = None,
    progress: bool = True,
    command: str | None = None,
    stop_at: int | None = None,
) -> PretrainResult:
    """Pretrain (or resume, from ``runs/<name>/last.pt``) an MAE; export the encoder when asked.

    frames: uint8 (T, S, S, 3) to train on; default ``load_frames(cfg.data)``. command: the command line,
    recorded in the export's provenance. stop_at: stop at this step after a checkpoint, as an interrupted
    run would (no export); the same call without it resumes.
    """
    # 1. setup: device, precision, data
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    amp = cfg.amp != "none"
    if frames is None:
        frames = load_frames(cfg.data, progress)
    size = get_config(cfg.model.variant).img_size
    if frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, {size}, {size}, 3) for {cfg.model.variant}; got "
                         f"{frames.dtype} {frames.shape} (set the generator's or recorder's image_size)")
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    pool = torch.from_numpy(frames)

    # 2. model, optimizer, schedule; resume when a checkpoint exists
    gen = torch.Generator().manual_seed(cfg.seed)
    model = MaskedAutoencoder(cfg.model, torch.Generator().manual_seed(cfg.seed)).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr))
    step, history, wandb_id = 0, [], None
    ckpt_path = run_dir / "last.pt"
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["cfg"]["model"] != asdict(cfg.model):
            raise ValueError(f"{ckpt_path} is of another model ({ckpt['cfg']['model']}, now "
                             f"{asdict(cfg.model)}); pick another name= or delete {run_dir}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["scheduler"])
        gen.set_state(ckpt["rng"]["generator"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        step, history, wandb_id = ckpt["step"], list(ckpt["history"]), ckpt.get("wandb_id")
        if progress:
            print(f"resuming {ckpt_path} at step {step}/{cfg.steps}")
    vis = pool[torch.linspace(0, len(pool) - 1, 4).long()]
    run = _wandb_init(cfg, run_dir, wandb_id)

    def save() -> None:
        ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(), "step": step, "history": history, "cfg": asdict(cfg),
                "rng": {"generator": gen.get_state(), "torch": torch.get_rng_state()},
                "wandb_id": run.id if run is not None else None}
        save_checkpoint(ckpt_path, ckpt)

    # 3. train
    model.train()
    losses: list[float] = []
    bar = tqdm(total=cfg.steps, initial=step, unit="step", desc=f"MAE {cfg.name}", disable=not progress)
    t0, seen = time.perf_counter(), 0
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    while step < end:
        idx = torch.randint(len(pool), (cfg.batch_size,), generator=gen)
        x = random_resized_crop(_normalize(pool[idx], device), cfg.crop_scale, cfg.crop_ratio, cfg.hflip, gen)
        noise = torch.rand(cfg.batch_size, model.num_patches, generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(_imagenet(x), noise)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        seen += cfg.batch_size
        loss = out.loss.item()
        losses.append(loss)
        history.append(loss)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = seen / (time.perf_counter() - t0)
            lr = optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
            with open(run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "loss": loss, "lr": lr, "img_per_s": rate}) + "\n")
            if run is not None:
                run.log({"loss": loss, "lr": lr, "img_per_s": rate}, step=step)
        if step % cfg.recon_every == 0 or step == cfg.steps:
            png = run_dir / "recon" / f"step_{step:06d}.png"
            png.parent.mkdir(exist_ok=True)
            imageio.imwrite(png, reconstruction_grid(model, vis, cfg.seed))
        if step % cfg.ckpt_every == 0 or step == end:
            save()
    bar.close()

    # 4. export the encoder in MVP's format
    export_path = None
    if cfg.export_name is not None and step >= cfg.steps:
        tail = history[-50:]
        provenance = {
            "name": cfg.export_name, "variant": cfg.model.variant, "method": "MAE (MVP recipe)",
            "mask_ratio": cfg.model.mask_ratio, "decoder": list(cfg.model.decoder_size()),
            "data": _describe_data(cfg, len(pool)), "steps": step, "batch_size": cfg.batch_size,
            "images_seen": step * cfg.batch_size, "final_loss": sum(tail) / max(1, len(tail)),
            "first_loss": history[0] if history else None, "seed": cfg.seed, "command": command,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        export_path, _ = export_encoder(model, Path(cfg.export_dir) / f"{cfg.export_name}.pth",
                                        cfg.export_fp16, provenance)
        if progress:
            print(f"exported {export_path} ({export_path.stat().st_size / 1e6:.1f} MB)")
    if run is not None:
        run.finish()
    return PretrainResult(run_dir, step, losses, history, export_path)


def _describe_data(cfg: PretrainConfig, n_frames: int) -> dict[str, Any]:
    gen = asdict(cfg.data.generator)
    return {"frames": n_frames, "camera": cfg.data.camera, "stores": list(cfg.data.stores),
            "generator": gen if cfg.data.generator.n_frames > 0 else None,
            "generator_key": cfg.data.generator.key() if cfg.data.generator.n_frames > 0 else None,
            "augmentation": {"crop_scale": list(cfg.crop_scale), "crop_ratio": list(cfg.crop_ratio),
                             "hflip": cfg.hflip}}


def _wandb_init(cfg: PretrainConfig, run_dir: Path, run_id: str | None) -> Any:
    mode = os.environ.get("WANDB_MODE", cfg.wandb_mode)
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(project=cfg.wandb_project, name=cfg.name, mode=mode, dir=str(run_dir), id=run_id,
                      resume="allow", config=asdict(cfg))
