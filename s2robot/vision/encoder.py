"""A frozen ViT (MVP's, ours, or a DINOv2 / SigLIP / CLIP tower) wrapped with S²: camera frames in, one feature
vector per frame out."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from s2robot.common.checks import check_image_side, check_seed
from s2robot.common.device import DTYPE_CHOICES, resolve_device, resolve_dtype
from s2robot.vision.hf_backbone import HF_VARIANTS, HFBackbone, HFSpec, build_hf_backbone, hf_spec
from s2robot.vision.image import IMAGENET_MEAN, IMAGENET_STD, to_float
from s2robot.vision.oracle import ORACLE, ORACLE_DIM, OracleEncoder
from s2robot.vision.presets import ENCODER_PRESETS
from s2robot.vision.s2 import num_splits, s2_forward
from s2robot.vision.vit import VARIANTS, VisionTransformer, ViTConfig, build_vit, flops_per_image, get_config
from s2robot.vision.weights import AUTO, LoadReport, load_resolved, resolve_weights

READOUTS = ("cls", "mean", "cls+grid")
FINGERPRINT_VERSION = 1


def backbone_arch(variant: str, img_size: int | None = None) -> ViTConfig | HFSpec:
    """The architecture of ``variant``: a ViT of ``vit.VARIANTS`` or a transformers tower of ``HF_VARIANTS``."""
    if variant in HF_VARIANTS:
        return hf_spec(variant, img_size)
    if variant in VARIANTS:
        return get_config(variant, img_size)
    raise ValueError(f"unknown encoder variant {variant!r}; ViTs: {sorted(VARIANTS)}; transformers towers (DINOv2, "
                     f"SigLIP, CLIP): {sorted(HF_VARIANTS)}")


def _flops_per_image(arch: ViTConfig | HFSpec) -> int:
    return arch.flops_per_image() if isinstance(arch, HFSpec) else flops_per_image(arch)


@dataclass
class EncoderConfig:
    """A frozen S² encoder. Named presets: ``s2robot.vision.presets`` (hydra group ``encoder``).

    variant: ViT registry name (``s2robot.vision.vit.VARIANTS``), e.g. ``vitb-mae-egosoup``, or a DINOv2 / SigLIP /
        CLIP tower through transformers (``s2robot.vision.hf_backbone.HF_VARIANTS``), e.g. ``hf-dinov2-vits14``
    weights: ``auto`` (resolve by variant name, see ``s2robot.vision.weights``), ``random``, or a ``.pth`` path; for
        a tower, a model folder or a hub id in the offline Hugging Face cache (never downloaded)
    seed: init seed when ``weights: random``
    img_sizes: S² scale sides [px]; default: the model's own size only (plain, single-scale ViT)
    scales: alternative to img_sizes, relative to the model's size (``[1, 2]`` = 224²+448² for ViT-B)
    max_split_size: largest tile side [px]; default the model's size, so every tile is model-sized
    resize_output_to_idx: which scale's patch grid the other scales are area-resized to
    readout: ``cls`` (MVP's choice; CLS averaged over tiles, concatenated across scales; SigLIP, which has no CLS:
        its attention-pooled embedding), ``mean`` (mean of the multi-scale patch tokens) or ``cls+grid`` (CLS plus
        a ``grid_size``² pooled patch grid)
    device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``
    dtype: compute dtype of the ViT: ``auto`` (bf16 on CUDA and on CPUs with native bf16, else float32; see
        ``s2robot.common.device``), ``float32``, ``bfloat16`` or ``float16``; features are float32
    max_batch: most tiles per ViT call (bounds memory); None = all tiles of a batch at once
    allow_download: let ``weights: auto`` download official MVP weights when not found locally (towers: never)
    oracle_noise: with ``variant: oracle`` (no ViT: privileged cube position + gripper, see
        ``s2robot.vision.oracle``), the std of each episode's cube-position offset [m]; ``seed`` draws it
    compile: ``torch.compile`` the ViT with this mode (``default``, ``reduce-overhead`` = CUDA graphs,
        ``max-autotune``); None = eager. Default mode fuses the norms and pointwise ops: on an H100, ViT-B-S² bf16
        at batch 64 went from 44% to 47% of the matmul rate. The first call of each batch shape compiles (~10 s)
    """

    variant: str = "vitb-mae-egosoup"
    weights: str = AUTO
    seed: int = 0
    img_sizes: list[int] | None = None
    scales: list[float] | None = None
    max_split_size: int | None = None
    resize_output_to_idx: int = 0
    readout: str = "cls"
    grid_size: int = 2
    device: str = "auto"
    dtype: str = "auto"
    max_batch: int | None = None
    allow_download: bool = False
    compile: str | None = None
    oracle_noise: float = 0.0

    def __post_init__(self) -> None:
        check_seed(self.seed)  # seeds the random init, and the oracle's per-episode noise (numpy)
        if self.is_oracle:
            if not (self.oracle_noise >= 0 and math.isfinite(self.oracle_noise)):
                raise ValueError(f"oracle_noise must be a finite value ≥ 0 [m], got {self.oracle_noise}")
            return
        arch = backbone_arch(self.variant)  # raises with the list of variants
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}; got {self.readout!r}")
        if self.compile not in (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise ValueError(f"compile must be null (eager) or a torch.compile mode such as 'default' or "
                             f"'reduce-overhead'; got {self.compile!r}")
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"dtype must be one of {list(DTYPE_CHOICES)}; got {self.dtype!r}")
        if self.img_sizes and self.scales:
            raise ValueError("set either img_sizes or scales, not both")
        if self.grid_size < 1:
            raise ValueError(f"grid_size must be ≥ 1; got {self.grid_size}")
        if self.max_split_size is not None:
            check_image_side(self.max_split_size, "max_split_size", low=1)
        if self.tile_size() % arch.patch_size:
            raise ValueError(f"S² tile size max_split_size={self.tile_size()} px is not a multiple of {self.variant}'s "
                             f"{arch.patch_size}-px patches; use a multiple of {arch.patch_size}, e.g. {arch.img_size}")
        bad_scales = [s for s in self.scales or [] if not (math.isfinite(s) and s > 0)]
        if bad_scales:
            raise ValueError(f"scales must be finite and > 0 (relative to the model's size); got {bad_scales}")
        sizes = self.resolved_img_sizes()
        field_name = "img_sizes" if self.img_sizes else f"scales × {self.variant}'s {self.model_size()} px"
        for size in sizes:
            check_image_side(size, f"each S² scale ({field_name})", low=1)
        if not -len(sizes) <= self.resize_output_to_idx < len(sizes):
            raise ValueError(f"resize_output_to_idx {self.resize_output_to_idx} is out of range for {sizes}")
        bad = [size for size in sizes if size % self.tile_size()]
        if bad:
            raise ValueError(
                f"S² scales {bad} px do not tile into the {self.tile_size()}-px images the ViT takes; "
                f"use multiples of {self.tile_size()} (e.g. [{self.tile_size()}, {2 * self.tile_size()}])"
            )

    @property
    def is_oracle(self) -> bool:
        """Privileged state instead of a ViT (``variant: oracle``)."""
        return self.variant == ORACLE

    def model_size(self) -> int:
        return backbone_arch(self.variant).img_size

    def tile_size(self) -> int:
        return self.max_split_size or self.model_size()

    def resolved_img_sizes(self) -> list[int]:
        """Absolute side of each S² scale [px] (none for the oracle)."""
        if self.is_oracle:
            return []
        if self.img_sizes:
            return [int(s) for s in self.img_sizes]
        return [int(self.model_size() * s) for s in (self.scales or [1.0])]

    def n_forward_images(self) -> int:
        """Model-sized images the ViT runs per frame (ViT-B, 224²+448²: 1 + 4 = 5)."""
        return sum(n * n for n in num_splits(self.resolved_img_sizes(), self.tile_size()))

    def feature_dim(self) -> int:
        """Width F of the features: D per scale, times (1 + grid²) for ``cls+grid``."""
        if self.is_oracle:
            return ORACLE_DIM
        width = backbone_arch(self.variant).embed_dim * len(self.resolved_img_sizes())
        return width * (1 + self.grid_size**2) if self.readout == "cls+grid" else width

    def flops_per_frame(self) -> int:
        if self.is_oracle:
            return 0
        return self.n_forward_images() * _flops_per_image(backbone_arch(self.variant, self.tile_size()))

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> EncoderConfig:
        """The preset ``name`` of ``ENCODER_PRESETS``, with overrides; unknown keys are an error."""
        from omegaconf import OmegaConf

        if name not in ENCODER_PRESETS:
            raise FileNotFoundError(f"no encoder config {name!r}; available: {sorted(ENCODER_PRESETS)} "
                                    "(s2robot/vision/presets.py)")
        merged = OmegaConf.merge(OmegaConf.structured(cls), ENCODER_PRESETS[name], overrides)
        return OmegaConf.to_object(merged)


@dataclass
class EncoderPlacement:
    """Where and in what precision a frozen encoder runs, and how many tiles a ViT call takes, overriding its config's
    at run time (None: the config's). The one override every entry point that runs an encoder shares, under the name
    ``placement`` (e.g. ``placement.dtype=float32``, ``eval.placement.device=cuda:1``): it changes precision and
    speed, never what the features mean (the fingerprint leaves it out).

    device: ``auto``, ``cpu``, ``cuda``, ``cuda:<i>``; dtype: one of ``DTYPE_CHOICES``; max_batch: most tiles per
    ViT call (≥ 1)
    """

    device: str | None = None
    dtype: str | None = None
    max_batch: int | None = None

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"placement.dtype must be one of {list(DTYPE_CHOICES)} or null (the encoder's), got "
                             f"{self.dtype!r}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"placement.max_batch must be ≥ 1 or null (the encoder's), got {self.max_batch}")

    def apply(self, cfg: EncoderConfig) -> EncoderConfig:
        """``cfg`` with the fields this placement sets."""
        return replace(cfg, **{k: v for k, v in asdict(self).items() if v is not None})


def encoder_fingerprint(cfg: EncoderConfig, weights_digest: str | None = None) -> str:
    """Stable id of what an encoder's features mean: architecture, weights content, scales, readout.

    Not device or dtype: those change precision, not meaning (a cache made in bf16 on a GPU serves a
    float32 CPU evaluation). ``weights_digest`` defaults to resolving ``cfg.weights`` (hashes the file,
    builds no model).
    """
    if cfg.is_oracle:
        return OracleEncoder(cfg.oracle_noise, cfg.seed).fingerprint
    if weights_digest is None:
        weights_digest = resolve_weights(cfg.variant, cfg.weights, cfg.seed, allow_download=False).digest
    key = {
        "version": FINGERPRINT_VERSION,
        "vit": asdict(backbone_arch(cfg.variant, cfg.tile_size())),
        "weights": weights_digest,
        "img_sizes": cfg.resolved_img_sizes(),
        "max_split_size": cfg.tile_size(),
        "resize_output_to_idx": cfg.resize_output_to_idx,
        "readout": cfg.readout,
        "grid_size": cfg.grid_size if cfg.readout == "cls+grid" else None,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def weights_digest(cfg: EncoderConfig) -> str:
    """The digest of ``cfg``'s weights (hashes the file; may download with ``allow_download``), for the fingerprint."""
    if cfg.is_oracle:
        return OracleEncoder().weights.digest
    return resolve_weights(cfg.variant, cfg.weights, cfg.seed, cfg.allow_download).digest


def build_encoder(cfg: EncoderConfig) -> FrozenS2Encoder | OracleEncoder:
    """The encoder of ``cfg``: the frozen S² ViT, or the privileged oracle for ``variant: oracle``."""
    return OracleEncoder(cfg.oracle_noise, cfg.seed) if cfg.is_oracle else FrozenS2Encoder(cfg)


class FrozenS2Encoder(nn.Module):
    """Frozen ViT + S². ``encoder(frames) -> (B, F)`` float32, with F = ``feature_dim``.

    frames: uint8 ``(B, H, W, 3)`` RGB (numpy or torch) or float ``(B, 3, H, W)`` in [0, 1]; square,
    any size (each S² scale is resized from it). The backbone's normalization is applied here: ImageNet for our
    ViTs, the tower's own mean/std for a transformers tower (``HFBackbone.image_mean``/``image_std``).
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.img_sizes = cfg.resolved_img_sizes()
        self.weights = resolve_weights(cfg.variant, cfg.weights, cfg.seed, cfg.allow_download)
        self.vit: VisionTransformer | HFBackbone
        self.load_report: LoadReport | None = None
        if cfg.variant in HF_VARIANTS:
            self.vit = build_hf_backbone(cfg.variant, cfg.tile_size(), self.weights, cfg.seed)
            mean, std = self.vit.image_mean, self.vit.image_std
        else:
            self.vit = build_vit(cfg.variant, cfg.tile_size())
            self.load_report = load_resolved(self.vit, self.weights, cfg.seed)
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        # not persistent: the state dict keeps only the backbone's keys
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.to(self.device)
        self.vit.to(self.dtype)
        # Compiled once per batch shape: callers with a ragged last batch pad it (see data.features._encode).
        # A bound method, not a module, so the state dict keeps only the ViT's keys.
        self._vit_call = (torch.compile(self.vit.forward, mode=cfg.compile, dynamic=False) if cfg.compile
                          else self.vit.forward)
        self.eval()

    def train(self, mode: bool = True) -> FrozenS2Encoder:
        """Always stays in eval mode: the encoder is frozen."""
        return super().train(False)

    @property
    def feature_dim(self) -> int:
        return self.cfg.feature_dim()

    @property
    def fingerprint(self) -> str:
        """Stable id of what the features mean (see ``encoder_fingerprint``)."""
        return encoder_fingerprint(self.cfg, self.weights.digest)

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance for artifact attrs and result files."""
        return {
            "fingerprint": self.fingerprint,
            "variant": self.cfg.variant,
            "weights": self.weights.label(),
            "weights_random": self.weights.is_random,
            "weights_digest": self.weights.digest,
            "img_sizes": self.img_sizes,
            "readout": self.cfg.readout,
            "feature_dim": self.feature_dim,
            "params": sum(p.numel() for p in self.vit.parameters()),
            "gflops_per_frame": self.cfg.flops_per_frame() / 1e9,
            "config": asdict(self.cfg),
        }

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames → normalized float32 ``(B, 3, S, S)`` on the encoder's device."""
        x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
        if x.ndim != 4:
            raise ValueError(
                f"frames must be 4-D: (B, H, W, 3) uint8 or (B, 3, H, W) float; got {tuple(x.shape)}"
            )
        if x.dtype == torch.uint8:
            if x.shape[-1] != 3:
                raise ValueError(f"uint8 frames must be (B, H, W, 3) RGB; got {tuple(x.shape)}")
            x = to_float(x, self.device)
        elif x.is_floating_point():
            if x.shape[1] != 3:
                raise ValueError(f"float frames must be (B, 3, H, W) in [0, 1]; got {tuple(x.shape)}")
            x = x.to(self.device, torch.float32)
        else:
            raise ValueError(f"frames must be uint8 or floating point; got {x.dtype}")
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"frames must be square; got {x.shape[-2]}x{x.shape[-1]} (crop or resize them)")
        return (x - self.pixel_mean) / self.pixel_std

    def _vit(self, tiles: torch.Tensor) -> torch.Tensor:
        return self._vit_call(tiles.to(self.dtype))  # (b, P+N, D)

    @torch.inference_mode()
    def forward(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = self.preprocess(frames)  # (B, 3, S, S)
        tokens = s2_forward(
            self._vit,
            x,
            img_sizes=self.img_sizes,
            max_split_size=self.cfg.tile_size(),
            resize_output_to_idx=self.cfg.resize_output_to_idx,
            num_prefix_token=self.vit.num_prefix_tokens,
            max_batch=self.cfg.max_batch,
        ).float()  # (B, P+h*w, D*K)
        return self.readout(tokens)

    encode = forward

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        """S² tokens ``(B, P+h*w, C)`` (P prefix tokens, the CLS first) → features ``(B, F)``."""
        cls, patches = tokens[:, 0], tokens[:, self.vit.num_prefix_tokens :]  # (B, C), (B, h*w, C)
        if self.cfg.readout == "cls":
            return cls
        if self.cfg.readout == "mean":
            return patches.mean(dim=1)
        grid = rearrange(patches, "b (h w) c -> b c h w", h=math.isqrt(patches.shape[1]))
        pooled = F.adaptive_avg_pool2d(grid, self.cfg.grid_size).flatten(1)  # (B, C*g*g)
        return torch.cat([cls, pooled], dim=1)
