"""Named encoder configs (hydra group ``encoder``): a registry in code, so a plain ``pip install`` resolves them
without the repository's ``configs/`` folder. Each preset holds only what differs from ``EncoderConfig``."""

from __future__ import annotations

from typing import Any

ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    # MVP ViT-S/16 (HOI MAE), plain 224²: MVP's default robotics encoder
    "mvp_vits": {"variant": "vits-mae-hoi", "img_sizes": [224]},
    # MVP ViT-S/16 with S² at 224²+448² (1 + 4 forward images per frame)
    "mvp_vits_s2": {"variant": "vits-mae-hoi", "img_sizes": [224, 448]},
    # MVP ViT-B/16 (Ego-Soup MAE), plain 224²: the paper's ViT-B baseline (43.8% cube pick)
    "mvp_vitb": {"img_sizes": [224]},
    # MVP ViT-B/16 with S² at 224²+448²: the paper's winner (62.5% cube pick), 1536-D features
    "mvp_vitb_s2": {"img_sizes": [224, 448]},
    # MVP ViT-L/16 at 256² (Ego-Soup MAE): the paper's 3.5x larger baseline (50.0% cube pick)
    "mvp_vitl": {"variant": "vitl-256-mae-egosoup", "img_sizes": [256]},
    # MVP ViT-L/16 with S² at 256²+512²: 2048-D features. Not in the paper's table
    "mvp_vitl_s2": {"variant": "vitl-256-mae-egosoup", "img_sizes": [256, 512]},
    # ViT-Ti/16 (192-D, 12 layers, 3 heads) with random weights: a CPU-sized stand-in, NOT pretrained
    "vitti_random": {"variant": "vitti", "weights": "random", "img_sizes": [224]},
    # ViT-Ti/16 with S² at 224²+448², random weights: CPU-sized stand-in, NOT pretrained
    "vitti_s2_random": {"variant": "vitti", "weights": "random", "img_sizes": [224, 448]},
    # ViT-Ti/16 MAE-pretrained in-domain on rendered cube-pick frames (shipped: weights/vitti-mae-cubepick.pth,
    # made by scripts/pretrain_mae.py), plain 224². Frozen, like MVP's encoders; CPU-sized
    "vitti_mae": {"variant": "vitti-mae-cubepick", "img_sizes": [224]},
    # the same with S² at 224²+448², 384-D CLS features
    "vitti_s2_mae": {"variant": "vitti-mae-cubepick", "img_sizes": [224, 448]},
    # ViT-Ti/16 MAE-pretrained with S² (shipped: weights/vitti-s2mae-cubepick.pth, made by scripts/pretrain_mae.py;
    # command in its .json), used with S² at 224²+448²
    "vitti_s2_s2mae": {"variant": "vitti-s2mae-cubepick", "img_sizes": [224, 448]},
    # ViT-Ti/16 at 112², MAE-pretrained with S² tiles of 112²+224² (shipped: weights/vitti-112-s2mae-cubepick.pth;
    # command in its .json), S² at 112²+224² of the 224² frames: 4.4× fewer FLOPs per frame than vitti_s2_mae
    "vitti112_s2_s2mae": {"variant": "vitti-112-s2mae-cubepick", "img_sizes": [112, 224]},
    # vitti112_s2_s2mae's model distilled to see through scene changes (shipped:
    # weights/vitti-112-invariant-cubepick.pth, made by scripts/distill_invariance.py; command in its .json):
    # docs/robustness.md
    "vitti112_s2_invariant": {"variant": "vitti-112-invariant-cubepick", "img_sizes": [112, 224]},
    # ViT-S/16 (MVP's ViT-S shape) MAE-pretrained in-domain with the ViT-Ti's recipe, frames and images seen
    # (shipped: weights/vits-mae-cubepick.pth, made on a GPU), plain 224², 384-D CLS
    "vits_mae": {"variant": "vits-mae-cubepick", "img_sizes": [224]},
    # the same with S² at 224²+448², 768-D CLS
    "vits_s2_mae": {"variant": "vits-mae-cubepick", "img_sizes": [224, 448]},
    # ViT-B/16 MAE-pretrained in-domain on a GPU (vitb-mae-cubepick.pth, 172 MB in fp16: not shipped; make it with
    # the README's command and put it in $S2ROBOT_WEIGHTS_DIR), plain 224²
    "vitb_mae": {"variant": "vitb-mae-cubepick", "img_sizes": [224]},
    # the same with S² at 224²+448² (the paper's winning setting), 1536-D CLS
    "vitb_s2_mae": {"variant": "vitb-mae-cubepick", "img_sizes": [224, 448]},
    # ViT-L/16 at 256² MAE-pretrained in-domain on a GPU (vitl-256-mae-cubepick.pth, 607 MB: not shipped)
    "vitl_mae": {"variant": "vitl-256-mae-cubepick", "img_sizes": [256]},
    # PRIVILEGED oracle, no vision: the cube position + gripper opening as the feature (the recipe's ceiling)
    "oracle": {"variant": "oracle"},
    # the oracle with a 3-cm (std per axis) error in each episode's cube position: a mediocre cube detector
    "oracle_3cm": {"variant": "oracle", "oracle_noise": 0.03},
    # DINOv2 / SigLIP / CLIP vision towers through transformers (s2robot/vision/hf_backbone.py), from a model folder
    # or the offline Hugging Face cache, never downloaded at run time (docs/encoders.md: how to fetch them). Plain
    # = one 224² tile; _s2 = S² at 224²+448² (1 + 4 tiles per frame). DINOv2 ViT-S/14 (facebook/dinov2-small)
    "dinov2_vits14": {"variant": "hf-dinov2-vits14", "img_sizes": [224]},
    "dinov2_vits14_s2": {"variant": "hf-dinov2-vits14", "img_sizes": [224, 448]},
    # DINOv2 ViT-S/14 with 4 registers (facebook/dinov2-with-registers-small); the registers are dropped
    "dinov2_vits14_reg": {"variant": "hf-dinov2-vits14-reg", "img_sizes": [224]},
    "dinov2_vits14_reg_s2": {"variant": "hf-dinov2-vits14-reg", "img_sizes": [224, 448]},
    # DINOv2 ViT-B/14 (facebook/dinov2-base)
    "dinov2_vitb14": {"variant": "hf-dinov2-vitb14", "img_sizes": [224]},
    "dinov2_vitb14_s2": {"variant": "hf-dinov2-vitb14", "img_sizes": [224, 448]},
    # SigLIP ViT-B/16 at 224 (google/siglip-base-patch16-224); `cls` reads its attention-pooled embedding
    "siglip_b16": {"variant": "hf-siglip-vitb16", "img_sizes": [224]},
    "siglip_b16_s2": {"variant": "hf-siglip-vitb16", "img_sizes": [224, 448]},
    # CLIP ViT-B/16 and ViT-B/32 (openai/clip-vit-base-patch16, -patch32)
    "clip_b16": {"variant": "hf-clip-vitb16", "img_sizes": [224]},
    "clip_b16_s2": {"variant": "hf-clip-vitb16", "img_sizes": [224, 448]},
    "clip_b32": {"variant": "hf-clip-vitb32", "img_sizes": [224]},
    "clip_b32_s2": {"variant": "hf-clip-vitb32", "img_sizes": [224, 448]},
    # test-sized (32-D, 2-layer) DINOv2 / SigLIP / CLIP towers with S², random weights: for tests and smoke runs only
    "dinov2_micro_s2_random": {"variant": "hf-dinov2-micro", "weights": "random", "img_sizes": [28, 56]},
    "siglip_micro_s2_random": {"variant": "hf-siglip-micro", "weights": "random", "img_sizes": [32, 64]},
    "clip_micro_s2_random": {"variant": "hf-clip-micro", "weights": "random", "img_sizes": [32, 64]},
    # a 2-layer 32-px ViT, plain 32² (no S²), random weights: for tests and smoke runs only
    "micro_random": {"variant": "vit-micro", "weights": "random", "img_sizes": [32]},
    # a 2-layer 32-px ViT with S² at 32²+64², random weights: for tests and smoke runs only
    "micro_s2_random": {"variant": "vit-micro", "weights": "random", "img_sizes": [32, 64]},
}
