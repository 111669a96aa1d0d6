"""FrozenS2Encoder: features equal the reference S² pipeline; frozen; fingerprints; configs; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import s2wrapper
import torch
from test_weights import random_micro, write_mvp_checkpoint

from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder, encoder_fingerprint
from s2robot.vision.image import IMAGENET_MEAN, IMAGENET_STD
from s2robot.vision.presets import ENCODER_PRESETS


def micro(**overrides: object) -> EncoderConfig:
    return EncoderConfig(**{"variant": "vit-micro", "weights": "random", "img_sizes": [32, 64], "dtype": "float32",
                            **overrides})


def frames(n: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_cls_features_equal_reference_pipeline() -> None:
    """uint8 frames → ImageNet norm → s2wrapper.forward → CLS: the same numbers as the encoder."""
    enc = FrozenS2Encoder(micro())
    f = frames(3, size=40)
    x = torch.from_numpy(f).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = s2wrapper.forward(enc.vit, x, img_sizes=[32, 64], max_split_size=32, num_prefix_token=1)
    out = enc(f)
    assert out.shape == (3, 64) == (3, enc.feature_dim) and out.dtype == torch.float32
    assert torch.allclose(out, ref[:, 0], atol=1e-5)
    mean = FrozenS2Encoder(micro(readout="mean"))(f)
    assert torch.allclose(mean, ref[:, 1:].mean(1), atol=1e-5)


def test_readouts_and_input_layouts() -> None:
    f = frames()
    grid = FrozenS2Encoder(micro(readout="cls+grid", grid_size=2))
    assert grid(f).shape == (2, grid.feature_dim) == (2, 64 * 5)
    enc = FrozenS2Encoder(micro())
    chw = torch.from_numpy(f).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(enc(f), enc.encode(chw), atol=1e-6)
    assert torch.allclose(enc(f), enc(torch.from_numpy(f)), atol=0)


def test_frozen_everywhere() -> None:
    enc = FrozenS2Encoder(micro())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc(frames()).requires_grad


def test_fingerprint_tracks_meaning_not_precision(tmp_path: Path) -> None:
    base = FrozenS2Encoder(micro()).fingerprint
    assert FrozenS2Encoder(micro()).fingerprint == base
    assert FrozenS2Encoder(micro(dtype="bfloat16")).fingerprint == base
    assert FrozenS2Encoder(micro(seed=1)).fingerprint != base
    assert FrozenS2Encoder(micro(img_sizes=[32])).fingerprint != base
    assert FrozenS2Encoder(micro(readout="mean")).fingerprint != base
    a = write_mvp_checkpoint(tmp_path / "a.pth", random_micro(1))
    b = write_mvp_checkpoint(tmp_path / "b.pth", random_micro(2))
    with pytest.warns(UserWarning):
        fa, fb = FrozenS2Encoder(micro(weights=str(a))), FrozenS2Encoder(micro(weights=str(b)))
    assert len({fa.fingerprint, fb.fingerprint, base}) == 3
    assert encoder_fingerprint(micro(weights=str(a))) == fa.fingerprint  # no model needed
    assert encoder_fingerprint(micro()) == base
    assert not fa.describe()["weights_random"] and FrozenS2Encoder(micro()).describe()["weights_random"]


def test_bfloat16_close_to_float32() -> None:
    f = frames(4)
    full, half = FrozenS2Encoder(micro())(f), FrozenS2Encoder(micro(dtype="bfloat16"))(f)
    assert half.dtype == torch.float32
    assert (half - full).norm() / full.norm() < 3e-2


def test_paper_setting_sizes() -> None:
    """ViT-B with S² 224²+448²: 5 forward images per frame, 1536-D features."""
    cfg = EncoderConfig.from_name("mvp_vitb_s2", weights="random")
    assert cfg.n_forward_images() == 5 and cfg.resolved_img_sizes() == [224, 448]
    assert cfg.feature_dim() == 1536 and EncoderConfig.from_name("mvp_vitb").feature_dim() == 768
    assert cfg.flops_per_frame() / 1e9 == pytest.approx(5 * 35.1, rel=0.01)
    assert EncoderConfig.from_name("mvp_vitl").model_size() == 256


@pytest.mark.parametrize("name", sorted(ENCODER_PRESETS))
def test_every_shipped_config_loads(name: str) -> None:
    cfg = EncoderConfig.from_name(name)
    assert cfg.is_oracle or cfg.n_forward_images() >= 1
    assert cfg.feature_dim() >= 4


def test_config_errors() -> None:
    with pytest.raises(Exception, match="typo_key"):
        EncoderConfig.from_name("micro_s2_random", typo_key=1)
    with pytest.raises(FileNotFoundError, match="available"):
        EncoderConfig.from_name("nope")
    with pytest.raises(ValueError, match="readout"):
        micro(readout="avg")
    with pytest.raises(ValueError, match="do not tile"):
        micro(img_sizes=[32, 50])
    with pytest.raises(ValueError, match="either img_sizes or scales"):
        micro(scales=[1, 2])
    with pytest.raises(ValueError, match="resize_output_to_idx"):
        micro(resize_output_to_idx=2)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((32, 32, 3), np.uint8), "4-D"),
        (np.zeros((1, 32, 32, 4), np.uint8), "RGB"),
        (np.zeros((1, 32, 40, 3), np.uint8), "square"),
        (torch.zeros(1, 32, 32, 3), "float frames must be"),
        (np.zeros((1, 32, 32, 3), np.int64), "uint8 or floating"),
    ],
)
def test_bad_frames(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrozenS2Encoder(micro())(bad)


def test_placement_moves_an_encoder_without_changing_its_features_meaning() -> None:
    """``placement`` (device, dtype, max batch) overrides only what it sets, and never the fingerprint."""
    from s2robot.vision.encoder import EncoderPlacement, encoder_fingerprint

    base = EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32, 64], dtype="bfloat16", max_batch=8)
    moved = EncoderPlacement(dtype="float32", max_batch=2).apply(base)
    assert (moved.dtype, moved.max_batch, moved.device) == ("float32", 2, base.device)
    assert EncoderPlacement().apply(base) == base
    assert encoder_fingerprint(moved) == encoder_fingerprint(base)
    with pytest.raises(ValueError, match=r"placement\.dtype must be one of .* got 'fp8'"):
        EncoderPlacement(dtype="fp8")
    with pytest.raises(ValueError, match=r"placement\.max_batch must be ≥ 1"):
        EncoderPlacement(max_batch=0)
