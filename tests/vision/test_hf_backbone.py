"""DINOv2 / SigLIP / CLIP towers under S²: equal to the reference s2wrapper, per-family normalization and tokens,
folder weights and their fingerprint, offline-only resolution, errors, params and FLOPs."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import s2wrapper
import torch
from safetensors.torch import load_file, save_file
from torch.utils.flop_counter import FlopCounterMode

from s2robot.vision import hf_backbone
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder, encoder_fingerprint
from s2robot.vision.hf_backbone import (
    CLIP_MEAN,
    CLIP_STD,
    HF_VARIANTS,
    HFBackbone,
    build_hf_backbone,
    hf_spec,
    random_config,
)
from s2robot.vision.image import IMAGENET_MEAN, IMAGENET_STD
from s2robot.vision.presets import ENCODER_PRESETS
from s2robot.vision.s2 import s2_forward
from s2robot.vision.vit import flops_per_image, get_config
from s2robot.vision.weights import ResolvedWeights, resolve_weights

MICRO = {"dinov2": ("hf-dinov2-micro", [28, 56]), "siglip": ("hf-siglip-micro", [32, 64]),
         "clip": ("hf-clip-micro", [32, 64])}
FAMILIES = sorted(MICRO)
NORMALIZATION = {"dinov2": (IMAGENET_MEAN, IMAGENET_STD), "siglip": ((0.5,) * 3, (0.5,) * 3),
                 "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))}


def tower(family: str, seed: int = 0, tile: int | None = None) -> HFBackbone:
    variant = MICRO[family][0]
    return build_hf_backbone(variant, tile or hf_spec(variant).img_size, ResolvedWeights("random", "r"), seed)


def config(family: str, **overrides: object) -> EncoderConfig:
    variant, sizes = MICRO[family]
    return EncoderConfig(**{"variant": variant, "weights": "random", "img_sizes": sizes, "dtype": "float32",
                            "device": "cpu", **overrides})


def frames(n: int = 2, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def save_folder(backbone: HFBackbone, folder: Path) -> Path:
    """A model folder as `hf download` leaves it: config.json + model.safetensors."""
    backbone.model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", FAMILIES)
def test_s2_equals_reference_on_each_tower(family: str) -> None:
    """Our S² on the tower equals s2wrapper.forward (random scales, output index, batching) to float tolerance."""
    model, rng = tower(family), random.Random(family)
    t = model.cfg.img_size
    for _ in range(3):
        sizes = rng.sample([t, 2 * t, 3 * t], k=rng.randint(1, 3))
        kwargs = {"img_sizes": sizes, "max_split_size": t, "num_prefix_token": 1,
                  "resize_output_to_idx": rng.randrange(-len(sizes), len(sizes))}
        x = torch.randn(rng.randint(1, 3), 3, 40, 40)
        with torch.no_grad():
            ref = s2wrapper.forward(model, x, **kwargs)
            ours = s2_forward(model, x, **kwargs)
            chunked = s2_forward(model, x, max_batch=3, **kwargs)
        side = model.cfg.grid_size * sizes[kwargs["resize_output_to_idx"]] // t  # patch grid of the output scale
        assert ours.shape == ref.shape == (x.shape[0], 1 + side**2, 32 * len(sizes))
        assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5), kwargs
        assert torch.allclose(chunked, ref, atol=1e-5, rtol=1e-5), kwargs


@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_equals_reference_pipeline_with_the_towers_normalization(family: str) -> None:
    """uint8 frames → the family's mean/std → s2wrapper.forward → readouts: the encoder's numbers, of feature_dim."""
    enc = FrozenS2Encoder(config(family))
    mean, std = NORMALIZATION[family]
    assert (enc.vit.image_mean, enc.vit.image_std) == (mean, std)
    f = frames(3)
    x = torch.from_numpy(f).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    sizes = MICRO[family][1]
    with torch.no_grad():
        ref = s2wrapper.forward(enc.vit, x, img_sizes=sizes, max_split_size=sizes[0], num_prefix_token=1)
    out = enc(f)
    assert out.shape == (3, enc.feature_dim) == (3, 64)
    assert torch.allclose(out, ref[:, 0], atol=1e-5)
    assert torch.allclose(FrozenS2Encoder(config(family, readout="mean"))(f), ref[:, 1:].mean(1), atol=1e-5)
    grid = FrozenS2Encoder(config(family, readout="cls+grid"))
    assert grid(f).shape == (3, grid.feature_dim) == (3, 64 * 5)
    imagenet = (x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1) -
                torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    if family != "dinov2":  # the normalization matters: ImageNet's would give other features
        with torch.no_grad():
            wrong = s2wrapper.forward(enc.vit, imagenet, img_sizes=sizes, max_split_size=sizes[0], num_prefix_token=1)
        assert not torch.allclose(out, wrong[:, 0], atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_close_to_float32_and_frozen(family: str) -> None:
    f = frames(4)
    full, half = FrozenS2Encoder(config(family)), FrozenS2Encoder(config(family, dtype="bfloat16"))
    a, b = full(f), half(f)
    assert b.dtype == torch.float32 and (b - a).norm() / a.norm() < 3e-2
    assert half.fingerprint == full.fingerprint
    full.train()
    assert not any(m.training for m in full.modules()) and not any(p.requires_grad for p in full.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_tokens_are_final_normed_with_the_cls_or_pooled_embedding_first(family: str) -> None:
    model = tower(family)
    x = torch.randn(2, 3, model.cfg.img_size, model.cfg.img_size)
    with torch.no_grad():
        tokens, out = model(x), model.model(pixel_values=x)
    n = model.cfg.grid_size**2
    assert tokens.shape == (2, 1 + n, 32)
    assert torch.allclose(tokens[:, 0], out.pooler_output, atol=1e-6)  # CLS (DINOv2, CLIP) / MAP head (SigLIP)
    hidden = out.last_hidden_state  # (2, P0+N, 32): normed for DINOv2 and SigLIP, not for CLIP
    expected = model.model.post_layernorm(hidden)[:, 1:] if family == "clip" else hidden[:, -n:]
    assert torch.allclose(tokens[:, 1:], expected, atol=1e-6)
    assert tokens[:, 1:].mean(-1).abs().max() < 1e-4  # after a final LayerNorm (random init: unit, no bias)
    assert (family == "clip") == (hidden[:, 1:].mean(-1).abs().max() > 1e-3)


def test_dinov2_registers_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = replace(HF_VARIANTS["hf-dinov2-micro"], num_register_tokens=2)
    monkeypatch.setitem(HF_VARIANTS, "hf-dinov2-micro-reg", spec)
    model = build_hf_backbone("hf-dinov2-micro-reg", 28, ResolvedWeights("random", "r"))
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        tokens, hidden = model(x), model.model(pixel_values=x).last_hidden_state
    assert hidden.shape[1] == 1 + 2 + 4 and tokens.shape == (2, 1 + 4, 32)
    assert torch.equal(tokens[:, 0], hidden[:, 0]) and torch.equal(tokens[:, 1:], hidden[:, 3:])
    assert type(model.model).__name__ == "Dinov2WithRegistersModel"


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_weights_load_and_their_digest_keys_the_fingerprint(family: str, tmp_path: Path) -> None:
    """A saved tower loads back to the same features; changing a weight, the config or the normalization changes the
    fingerprint (computed without building the model)."""
    random_enc = FrozenS2Encoder(config(family, seed=3))
    folder = save_folder(random_enc.vit, tmp_path / "tower")
    cfg = config(family, weights=str(folder))
    enc = FrozenS2Encoder(cfg)
    f = frames()
    assert torch.allclose(enc(f), random_enc(f), atol=1e-6)
    assert enc.weights.source == "hf-folder" and not enc.describe()["weights_random"]
    base = encoder_fingerprint(cfg)
    assert base == enc.fingerprint != random_enc.fingerprint
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in sorted(weights) if k.startswith("encoder.") and weights[k].ndim == 2)  # a block matrix
    weights[name] = weights[name] + 1e-2 * torch.randn(weights[name].shape)
    save_file(weights, folder / "model.safetensors")
    changed = encoder_fingerprint(cfg)
    assert changed != base and not torch.allclose(FrozenS2Encoder(cfg)(f), enc(f), atol=1e-6)
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "layer_norm_eps": 1e-5}))
    assert encoder_fingerprint(cfg) not in (base, changed)
    before = encoder_fingerprint(cfg)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.4] * 3, "image_std": [0.3] * 3}))
    assert encoder_fingerprint(cfg) != before
    assert FrozenS2Encoder(cfg).vit.image_mean == (0.4, 0.4, 0.4)


def test_full_clip_checkpoint_and_pytorch_bin_load_the_vision_tower(tmp_path: Path) -> None:
    """A vision+text checkpoint (keys under vision_model., text keys beside) in pytorch_model.bin loads its tower."""
    source = tower("clip", seed=5)
    state = {f"vision_model.{k}": v for k, v in source.model.state_dict().items()}
    state["text_model.embeddings.token_embedding.weight"] = torch.zeros(10, 8)
    state["logit_scale"] = torch.tensor(2.0)
    folder = tmp_path / "clip-full"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    vision = random_config(source.cfg).to_dict()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip", "vision_config": vision}))
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": list(CLIP_MEAN),
                                                                 "image_std": list(CLIP_STD)}))
    loaded = FrozenS2Encoder(config("clip", weights=str(folder)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.vit(x), source(x), atol=1e-6)


def test_folder_of_another_model_is_refused(tmp_path: Path) -> None:
    clip = save_folder(tower("clip"), tmp_path / "clip")
    with pytest.raises(ValueError, match=r"holds a 'clip_vision_model' model, but encoder 'hf-siglip-micro'"):
        FrozenS2Encoder(config("siglip", weights=str(clip)))
    wider = replace(HF_VARIANTS["hf-clip-micro"], embed_dim=64, mlp_dim=128)
    folder = tmp_path / "wide"
    hf_backbone._classes(wider)[0](random_config(wider)).save_pretrained(folder)
    with pytest.raises(ValueError, match=r"architecture: .*'hidden_size': '64 \(variant: 32\)'"):
        FrozenS2Encoder(config("clip", weights=str(folder)))
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"has config\.json but no weights"):
        resolve_weights("hf-clip-micro", str(folder))
    with pytest.raises(FileNotFoundError, match=r"is a file; .* pass"):
        resolve_weights("hf-clip-micro", str(folder / "config.json"))


def test_missing_weights_name_what_was_looked_for_and_how_to_fill_it(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert EncoderConfig.from_name("dinov2_vits14_s2").feature_dim() == 768  # a config needs no weights
    with pytest.raises(FileNotFoundError) as err:
        FrozenS2Encoder(EncoderConfig.from_name("dinov2_vits14_s2", device="cpu"))
    message = str(err.value)
    for part in ("'hf-dinov2-vits14' (facebook/dinov2-small)", "hf download facebook/dinov2-small --local-dir",
                 "weights/hf/dinov2-small", str(tmp_path / "hf-home" / "hub"), "HF_HOME", "encoder.weights=random",
                 "Nothing is downloaded"):
        assert part in message, part
    with pytest.raises(FileNotFoundError, match="no weights for encoder 'hf-clip-vitb16'"):
        encoder_fingerprint(EncoderConfig.from_name("clip_b16_s2"))  # the cache key needs the weights' digest
    with pytest.raises(FileNotFoundError, match=r"looked for .*nowhere/tower"):
        resolve_weights("hf-clip-micro", str(tmp_path / "nowhere" / "tower"))
    with pytest.raises(FileNotFoundError, match="test-sized tower with no pretrained weights"):
        resolve_weights("hf-clip-micro")


def test_hub_ids_resolve_from_the_offline_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id found in the Hugging Face cache (snapshot layout) resolves to its snapshot folder; no network."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    commit = "0" * 40
    snapshot = save_folder(tower("siglip", seed=2), cache / "models--someorg--tiny-siglip" / "snapshots" / commit)
    (cache / "models--someorg--tiny-siglip" / "refs").mkdir()
    (cache / "models--someorg--tiny-siglip" / "refs" / "main").write_text(commit)
    resolved = resolve_weights("hf-siglip-micro", "someorg/tiny-siglip")
    assert resolved.path == snapshot and resolved.digest == hf_backbone.folder_digest(snapshot)
    FrozenS2Encoder(config("siglip", weights="someorg/tiny-siglip"))
    with pytest.raises(FileNotFoundError, match="'someorg/absent' in the Hugging Face cache"):
        resolve_weights("hf-siglip-micro", "someorg/absent")


def test_tile_size_must_be_a_multiple_of_the_patch() -> None:
    with pytest.raises(ValueError, match=r"max_split_size=30 px is not a multiple of hf-dinov2-micro's 14-px patches"):
        config("dinov2", img_sizes=[30], max_split_size=30)
    with pytest.raises(ValueError, match=r"not a multiple of hf-clip-vitb16's 16-px patches; .* e\.g\. 224"):
        EncoderConfig.from_name("clip_b16", max_split_size=200, img_sizes=[200])
    with pytest.raises(ValueError, match="14-px patches"):
        hf_spec("hf-dinov2-vits14", 100)
    with pytest.raises(ValueError, match=r"unknown encoder variant 'hf-dino'.*hf-dinov2-vits14"):
        EncoderConfig(variant="hf-dino")


@pytest.mark.parametrize("family", FAMILIES)
def test_other_tile_sizes_interpolate_the_position_table(family: str) -> None:
    """A tile other than the tower's native size (max_split_size) runs, S² over it too."""
    tile = 56 if family == "dinov2" else 48
    enc = FrozenS2Encoder(config(family, img_sizes=[tile, 2 * tile], max_split_size=tile))
    assert enc.vit.cfg.img_size == tile != enc.vit.cfg.native_size
    assert enc.vit.cfg.grid_size == tile // enc.vit.cfg.patch_size and enc(frames()).shape == (2, 64)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("native", [True, False])
def test_flops_and_params_match_the_model(family: str, native: bool) -> None:
    """HFSpec.flops_per_image equals torch's FLOP counter on the tower (eager attention, so attention is counted);
    param_count equals the built model's."""
    spec = hf_spec(MICRO[family][0])
    model = tower(family, tile=spec.img_size if native else 3 * spec.patch_size)
    model.model.set_attn_implementation("eager")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, model.cfg.img_size, model.cfg.img_size))
    assert counter.get_total_flops() == model.cfg.flops_per_image()
    assert spec.param_count() == sum(p.numel() for p in model.parameters()) == FrozenS2Encoder(
        config(family)).describe()["params"]


# preset → (params [M], GFLOPs per frame at its S² scales, feature dim of the cls readout)
PRESET_SIZES = {
    "dinov2_vits14": (22.06, 12.25, 384), "dinov2_vits14_s2": (22.06, 61.24, 768),
    "dinov2_vits14_reg_s2": (22.06, 62.28, 768), "dinov2_vitb14": (86.58, 46.32, 768),
    "dinov2_vitb14_s2": (86.58, 231.61, 1536), "siglip_b16": (92.88, 35.42, 768),
    "siglip_b16_s2": (92.88, 177.08, 1536), "clip_b16": (85.80, 35.13, 768), "clip_b16_s2": (85.80, 175.63, 1536),
    "clip_b32": (87.46, 8.82, 768), "clip_b32_s2": (87.46, 44.08, 1536),
}


@pytest.mark.parametrize("name", sorted(PRESET_SIZES))
def test_preset_params_and_flops(name: str) -> None:
    """Params (the tower as loaded) and forward GFLOPs per frame (1 + 4 tiles for the _s2 presets)."""
    cfg = EncoderConfig.from_name(name)
    params, gflops, dim = PRESET_SIZES[name]
    assert hf_spec(cfg.variant).param_count() / 1e6 == pytest.approx(params, abs=0.005)
    assert cfg.flops_per_frame() / 1e9 == pytest.approx(gflops, abs=0.005)
    assert cfg.feature_dim() == dim and cfg.n_forward_images() == (5 if name.endswith("_s2") else 1)


def test_clip_b16_costs_what_the_same_vit_b16_costs() -> None:
    """CLIP ViT-B/16 is ViT-B/16 with one CLS: the same FLOPs as our ViT-B formula; DINOv2 at 224 has 16² patches."""
    assert hf_spec("hf-clip-vitb16").flops_per_image() == flops_per_image(get_config("vitb-mae-egosoup"))
    assert hf_spec("hf-dinov2-vits14").grid_size == 16
    assert {p.get("variant") for p in ENCODER_PRESETS.values()} >= {"hf-dinov2-vits14", "hf-siglip-vitb16",
                                                                 "hf-clip-vitb16"}
