"""S²: equality with the reference s2wrapper.forward, invariants, batching and error paths."""

from __future__ import annotations

import itertools
import random
import zlib

import pytest
import s2wrapper
import torch
from torch import nn

from s2robot.vision.s2 import merge_chessboard, s2_forward, split_chessboard
from s2robot.vision.vit import VisionTransformer, get_config


class ToyTokens(nn.Module):
    """A model for any input that is a multiple of 8 px: patch conv, token mixing, optional prefix."""

    def __init__(self, width: int = 12, prefix: int = 1) -> None:
        super().__init__()
        self.prefix = prefix
        self.patch = nn.Conv2d(3, width, 8, stride=8)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, width * prefix) if prefix else None
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        t = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, C)
        t = t + torch.tanh(self.mix(t))
        if not self.prefix:
            return t
        p = self.head(t.mean(1)).view(x.shape[0], self.prefix, -1)  # (B, P, C)
        return torch.cat([p, t], dim=1)


class ToyMap(nn.Module):
    """A ConvNet-like model returning maps (B, C, h, w)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def _configs() -> list[dict]:
    """Many reference-supported configurations (input 32 px unless given)."""
    grid = []
    size_specs = [
        {"scales": [1]},
        {"scales": [1, 2]},
        {"scales": [0.5, 1, 2]},
        {"scales": [1, 1.5], "max_split_size": 16},
        {"img_sizes": [32, 64]},
        {"img_sizes": [64, 32, 96]},
        {"img_sizes": [16, 48], "max_split_size": 16},
        {"img_sizes": [32, 64], "max_split_size": 64},
    ]
    for spec, prefix, idx in itertools.product(size_specs, (0, 1, 2), (0, 1, -1)):
        n_scales = len(spec.get("scales") or spec.get("img_sizes"))
        if -n_scales <= idx < n_scales:
            grid.append({**spec, "num_prefix_token": prefix, "resize_output_to_idx": idx})
    return grid


@pytest.mark.parametrize("kwargs", _configs(), ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_equals_reference_bnc(kwargs: dict) -> None:
    """Token models: ours equals s2wrapper.forward to 1e-5 on random inputs and weights."""
    torch.manual_seed(zlib.crc32(str(kwargs).encode()))
    model = ToyTokens(prefix=kwargs["num_prefix_token"]).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = s2wrapper.forward(model, x, **kwargs)
        ours = s2_forward(model, x, **kwargs)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("split_forward", [False, True])
@pytest.mark.parametrize("spec", [{"scales": [1, 2]}, {"img_sizes": [24, 48, 72], "max_split_size": 24}])
def test_equals_reference_bchw(spec: dict, split_forward: bool) -> None:
    """Map models (output_shape='bchw'), with and without the reference's split_forward."""
    model = ToyMap().eval()
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        ref = s2wrapper.forward(model, x, output_shape="bchw", split_forward=split_forward, **spec)
        ours = s2_forward(model, x, output_shape="bchw", split_forward=split_forward, **spec)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)


def test_equals_reference_on_vit_random_configs() -> None:
    """Our ViT as the model, random S² settings: equal to the reference, and with max_batch too."""
    rng = random.Random(0)
    model = VisionTransformer(get_config("vit-micro")).eval()
    model.reset_parameters(torch.Generator().manual_seed(0))
    for _ in range(6):
        sizes = rng.sample([32, 64, 96], k=rng.randint(1, 3))
        kwargs = {"img_sizes": sizes, "max_split_size": 32, "num_prefix_token": 1,
                  "resize_output_to_idx": rng.randrange(-len(sizes), len(sizes))}
        x = torch.rand(rng.randint(1, 3), 3, 40, 40)
        with torch.no_grad():
            ref = s2wrapper.forward(model, x, **kwargs)
            ours = s2_forward(model, x, **kwargs)
            chunked = s2_forward(model, x, max_batch=3, **kwargs)
        assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5), kwargs
        assert torch.allclose(chunked, ref, atol=1e-5, rtol=1e-5), kwargs


def test_one_scale_is_plain_forward() -> None:
    """A single scale at the input size is the model itself."""
    model = ToyTokens(prefix=1).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(s2_forward(model, x, scales=[1], num_prefix_token=1), model(x), atol=1e-6)


def test_merge_inverts_split_and_order_is_tile_major() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    tiles = split_chessboard(x, 2)
    assert tiles.shape == (8, 1, 2, 2)
    assert torch.equal(tiles[0], x[0, :, :2, :2]) and torch.equal(tiles[1], x[1, :, :2, :2])
    assert torch.equal(tiles[2], x[0, :, :2, 2:])  # (nh nw b): second tile of image 0 is top-right
    assert torch.equal(merge_chessboard(tiles, 2), x)


def test_all_scales_in_one_model_call() -> None:
    """The reference calls the model once per scale; ours once per distinct tile size."""
    model = ToyTokens(prefix=1).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        s2wrapper.forward(model, x, scales=[1, 2, 3], max_split_size=32, num_prefix_token=1)
        assert model.calls == 3
        model.calls = 0
        s2_forward(model, x, scales=[1, 2, 3], max_split_size=32, num_prefix_token=1)
        assert model.calls == 1
        model.calls = 0
        s2_forward(model, x, scales=[1, 2, 3], max_split_size=32, num_prefix_token=1, max_batch=4)
        assert model.calls == 4  # 1 + 4 + 9 = 14 tiles in chunks of 4


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (torch.zeros(3, 32, 32), {"scales": [1]}, "must be \\(B, C, H, W\\)"),
        (torch.zeros(1, 3, 32, 40), {"scales": [1]}, "square images only"),
        (torch.zeros(1, 3, 32, 32), {}, "either `scales` or `img_sizes`"),
        (torch.zeros(1, 3, 32, 32), {"img_sizes": [51], "max_split_size": 32}, "does not tile"),
        (torch.zeros(1, 3, 32, 32), {"scales": [1], "output_shape": "nchw"}, "output_shape"),
        (torch.zeros(1, 3, 32, 32), {"scales": [1], "output_shape": "bchw", "num_prefix_token": 1}, "prefix"),
    ],
)
def test_bad_input_errors(x: torch.Tensor, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        s2_forward(ToyTokens(prefix=0), x, **kwargs)


def test_wrong_channels_reported_by_model() -> None:
    """Channel mismatches surface as a clear error from our ViT, not deep inside a conv."""
    with pytest.raises(ValueError, match="expected images"):
        s2_forward(VisionTransformer(get_config("vit-micro")), torch.zeros(1, 4, 32, 32), scales=[1],
                   num_prefix_token=1)
