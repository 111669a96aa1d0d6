"""S² (Scaling on Scales) as pure functions.

``s2_forward`` computes what the reference ``s2wrapper.forward`` (PyPI ``scaling-on-scales``) computes, with
the same keyword names: each scale is resized from the input (bicubic, align_corners False, no antialias,
in float32), split into ``ceil(size / max_split_size)²`` tiles in tile-major order ``(nh nw b)``, run
through the model, merged back into a map, resized to the map of ``resize_output_to_idx`` with ``area``
interpolation, and concatenated on channels. Prefix (CLS) tokens are averaged over a scale's tiles and
concatenated across scales, in front of the patch tokens.

The one difference is speed: the reference calls the model once per scale; here the tiles of all scales
that share a tile size go through the model in one batched call (optionally in chunks of ``max_batch``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

Model = Callable[[torch.Tensor], torch.Tensor]


def split_chessboard(x: torch.Tensor, num_split: int) -> torch.Tensor:
    """Cut each image into ``num_split²`` tiles, stacked tile-major: ``(B,C,H,W) -> (n*n*B, C, H/n, W/n)``."""
    if x.shape[-1] % num_split or x.shape[-2] % num_split:
        raise ValueError(f"a {tuple(x.shape[-2:])} map does not split into {num_split}x{num_split} tiles")
    return rearrange(x, "b c (nh h) (nw w) -> (nh nw b) c h w", nh=num_split, nw=num_split)


def merge_chessboard(x: torch.Tensor, num_split: int) -> torch.Tensor:
    """Inverse of ``split_chessboard``: ``(n*n*B, C, h, w) -> (B, C, n*h, n*w)``."""
    if x.shape[0] % (num_split**2):
        raise ValueError(f"batch of {x.shape[0]} tiles is not a multiple of {num_split}² tiles per image")
    return rearrange(x, "(nh nw b) c h w -> b c (nh h) (nw w)", nh=num_split, nw=num_split)


def scale_sizes(
    input_size: int,
    scales: Sequence[float] | None = None,
    img_sizes: Sequence[int] | None = None,
) -> list[int]:
    """Image side per scale [px], as the reference computes it (``int(input_size * scale)``)."""
    if img_sizes:
        return [int(s) for s in img_sizes]
    if not scales:
        raise ValueError("S² needs either `scales` or `img_sizes`")
    return [int(input_size * scale) for scale in scales]


def num_splits(img_sizes: Sequence[int], max_split_size: int) -> list[int]:
    """Tiles per side for each scale; every scale must cut into equal integer tiles."""
    splits = [math.ceil(size / max_split_size) for size in img_sizes]
    for size, n in zip(img_sizes, splits, strict=True):
        if size % n:
            raise ValueError(
                f"scale of {size} px does not tile into {n}x{n} equal tiles of at most {max_split_size} px; "
                f"choose sizes that are multiples of {math.ceil(size / n)} or another max_split_size"
            )
    return splits


def _check_input(x: torch.Tensor, output_shape: str, num_prefix_token: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"S² input must be (B, C, H, W); got a {x.ndim}-D tensor of shape {tuple(x.shape)}")
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"S² supports square images only; got {x.shape[2]}x{x.shape[3]}")
    if output_shape not in ("bnc", "bchw"):
        raise ValueError(f"output_shape must be 'bnc' (ViT tokens) or 'bchw' (maps); got {output_shape!r}")
    if output_shape == "bchw" and num_prefix_token:
        raise ValueError("a 'bchw' model (a ConvNet map) has no prefix tokens; set num_prefix_token=0")


def _run_model(model: Model, x: torch.Tensor, max_batch: int | None) -> torch.Tensor:
    if not max_batch or x.shape[0] <= max_batch:
        return model(x)
    return torch.cat([model(chunk) for chunk in x.split(max_batch)], dim=0)


def _run_tiles(model: Model, tiles: Sequence[torch.Tensor], max_batch: int | None) -> list[torch.Tensor]:
    """The model's output for each scale's tiles ``(n*n*B, C, t, t)``, in the order given, from one call per tile
    size: scales whose tiles share a size are concatenated on the batch, run together and split back."""
    outs: list[torch.Tensor | None] = [None] * len(tiles)
    for tile_size in dict.fromkeys(t.shape[-1] for t in tiles):
        idx = [i for i, t in enumerate(tiles) if t.shape[-1] == tile_size]
        joint = _run_model(model, torch.cat([tiles[i] for i in idx]), max_batch)
        for i, part in zip(idx, joint.split([tiles[i].shape[0] for i in idx]), strict=True):
            outs[i] = part
    return outs


def _tokens_to_map(out: torch.Tensor) -> torch.Tensor:
    side = math.isqrt(out.shape[1])
    if side * side != out.shape[1]:
        raise ValueError(f"model returned {out.shape[1]} patch tokens, which is not a square grid")
    return rearrange(out, "b (h w) c -> b c h w", h=side)


def s2_forward(
    model: Model,
    input: torch.Tensor,
    scales: Sequence[float] | None = None,
    img_sizes: Sequence[int] | None = None,
    max_split_size: int | None = None,
    resize_output_to_idx: int = 0,
    num_prefix_token: int = 0,
    output_shape: str = "bnc",
    split_forward: bool = False,
    max_batch: int | None = None,
) -> torch.Tensor:
    """Multi-scale features of ``input`` ``(B, C, S, S)``, equal to ``s2wrapper.forward``.

    Returns ``(B, P + h*w, C*K)`` for ``bnc`` (P prefix tokens, K scales, h×w the map of scale
    ``resize_output_to_idx``) or ``(B, C*K, h, w)`` for ``bchw``. ``split_forward`` (the reference's
    option to run tiles in chunks of B) and ``max_batch`` bound the batch the model sees.
    """
    _check_input(input, output_shape, num_prefix_token)
    b, input_size = input.shape[0], input.shape[-1]
    sizes = scale_sizes(input_size, scales, img_sizes)
    splits = num_splits(sizes, max_split_size or input_size)
    chunk = max_batch or (b if split_forward else None)

    # 1. Resize each scale and cut it into tiles.
    tiles = [
        split_chessboard(
            F.interpolate(input.to(torch.float32), size=size, mode="bicubic").to(input.dtype), n
        )
        for size, n in zip(sizes, splits, strict=True)
    ]

    # 2. One model call for all tiles of the same size (the reference makes one call per scale).
    outs = _run_tiles(model, tiles, chunk)

    # 3. Separate prefix tokens, merge tiles back into one map per scale.
    prefixes = [out[:, :num_prefix_token] for out in outs]
    maps = [out[:, num_prefix_token:] for out in outs]
    if output_shape == "bnc":
        maps = [_tokens_to_map(m) for m in maps]
    maps = [merge_chessboard(m, n) for m, n in zip(maps, splits, strict=True)]

    # 4. Area-resize every scale's map to the chosen one and concatenate on channels.
    out_size = maps[resize_output_to_idx].shape[-2]
    out = torch.cat(
        [F.interpolate(m.to(torch.float32), size=out_size, mode="area").to(m.dtype) for m in maps], dim=1
    )
    if output_shape == "bchw":
        return out
    out = rearrange(out, "b c h w -> b (h w) c")
    if num_prefix_token == 0:
        return out
    # Prefix tokens: mean over a scale's tiles, then concatenated across scales.
    prefix = torch.cat(
        [rearrange(p, "(n b) t c -> n b t c", b=b).mean(dim=0) for p in prefixes], dim=-1
    )  # (B, P, C*K)
    return torch.cat([prefix, out], dim=1)
