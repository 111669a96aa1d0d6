"""ViT backbone: timm key names and shapes, numerics against a literal reference, sizes and FLOPs."""

from __future__ import annotations

import math

import pytest
import torch

from s2robot.vision.vit import (
    MVP_VARIANTS,
    VARIANTS,
    VisionTransformer,
    build_vit,
    flops_per_image,
    get_config,
    param_count,
    resize_pos_embed,
)


def timm_keys(depth: int) -> set[str]:
    """The state-dict keys of timm's VisionTransformer without its head (MVP deletes it)."""
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight"}
    keys.add("norm.bias")
    for i in range(depth):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"}
    return keys


def reference_forward(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """timm's ViT math written out literally (reshape/permute as timm does), in float64."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    cfg = model.cfg
    x = x.double()
    b = x.shape[0]
    x = torch.nn.functional.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), x], dim=1) + sd["pos_embed"]

    def ln(t: torch.Tensor, p: str) -> torch.Tensor:
        w, b_ = sd[f"{p}.weight"], sd[f"{p}.bias"]
        return torch.nn.functional.layer_norm(t, t.shape[-1:], w, b_, cfg.norm_eps)

    def lin(t: torch.Tensor, p: str) -> torch.Tensor:
        return t @ sd[f"{p}.weight"].T + sd[f"{p}.bias"]

    h, e = cfg.num_heads, cfg.embed_dim // cfg.num_heads
    for i in range(cfg.depth):
        p = f"blocks.{i}"
        y = ln(x, f"{p}.norm1")
        n = y.shape[1]
        qkv = lin(y, f"{p}.attn.qkv").reshape(b, n, 3, h, e).permute(2, 0, 3, 1, 4)
        attn = (qkv[0] @ qkv[1].transpose(-2, -1) / math.sqrt(e)).softmax(-1)
        y = (attn @ qkv[2]).transpose(1, 2).reshape(b, n, cfg.embed_dim)
        x = x + lin(y, f"{p}.attn.proj")
        y = lin(torch.nn.functional.gelu(lin(ln(x, f"{p}.norm2"), f"{p}.mlp.fc1")), f"{p}.mlp.fc2")
        x = x + y
    return ln(x, "norm")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_keys_and_param_count_match_timm_layout(variant: str) -> None:
    """Every variant has exactly timm's keys; param_count agrees with the module."""
    with torch.device("meta"):
        model = build_vit(variant)
    cfg = model.cfg
    assert set(model.state_dict()) == timm_keys(cfg.depth)
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())
    sd = model.state_dict()
    assert sd["pos_embed"].shape == (1, 1 + cfg.num_patches, cfg.embed_dim)
    assert sd["patch_embed.proj.weight"].shape == (cfg.embed_dim, 3, cfg.patch_size, cfg.patch_size)
    assert sd["blocks.0.attn.qkv.weight"].shape == (3 * cfg.embed_dim, cfg.embed_dim)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (4 * cfg.embed_dim, cfg.embed_dim)


def test_mvp_registry_facts() -> None:
    """The MVP releases have the published widths, depths, heads and input sizes."""
    expect = {"vits": (384, 12, 12, 224), "vitb": (768, 12, 12, 224), "vitl": (1024, 24, 16, 256)}
    for name in MVP_VARIANTS:
        cfg = get_config(name)
        assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.img_size) == expect[name.split("-")[0]]
        assert (cfg.patch_size, cfg.mlp_ratio, cfg.qkv_bias, cfg.norm_eps) == (16, 4.0, True, 1e-6)
    # Known sizes: timm's vit_base_patch16_224 has 86,567,656 params with its 1000-way head.
    assert param_count(get_config("vitb-mae-egosoup")) == 86_567_656 - (768 * 1000 + 1000)
    # ViT-B/16 at 224 is 17.6 GMACs (DeiT/timm tables); we count 2 FLOPs per multiply-add.
    assert flops_per_image(get_config("vitb-mae-egosoup")) / 2e9 == pytest.approx(17.56, rel=0.01)


def test_forward_matches_literal_reference() -> None:
    """SDPA attention and head layout equal timm's math to float32 precision."""
    model = VisionTransformer(get_config("vitti", img_size=64)).eval()
    model.reset_parameters(torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.pos_embed.normal_(std=0.5)  # make position and token order matter
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
    ref = reference_forward(model, x)
    assert ours.shape == (3, 1 + 16, 192)
    assert torch.allclose(ours.double(), ref, atol=2e-5, rtol=1e-4)
    assert torch.equal(VisionTransformer.cls_tokens(ours), ours[:, 0])
    assert VisionTransformer.patch_tokens(ours).shape == (3, 16, 192)


def test_seeded_init_is_deterministic() -> None:
    a, b = build_vit("vit-micro"), build_vit("vit-micro")
    a.reset_parameters(torch.Generator().manual_seed(3))
    b.reset_parameters(torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    b.reset_parameters(torch.Generator().manual_seed(4))
    assert not torch.equal(a.pos_embed, b.pos_embed)


def test_bad_input_and_config_errors() -> None:
    model = build_vit("vit-micro")
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 32, 32\)"):
        model(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match="unknown ViT variant"):
        get_config("vitb")
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        get_config("vitb-mae-egosoup", img_size=230)


def test_resize_pos_embed() -> None:
    """Same grid is the identity; another grid keeps CLS and resamples the patch table."""
    pos = torch.randn(1, 1 + 16, 8)
    assert torch.allclose(resize_pos_embed(pos, 4), pos, atol=1e-6)
    big = resize_pos_embed(pos, 6)
    assert big.shape == (1, 37, 8) and torch.equal(big[:, 0], pos[:, 0])
    const = torch.ones(1, 17, 8)
    assert torch.allclose(resize_pos_embed(const, 7), torch.ones(1, 50, 8), atol=1e-5)
