"""Batched image augmentation for pretraining and distillation: random resized crops and the tiles S² feeds an encoder.

Both act on float ``(B, C, S, S)`` batches with a ``torch.Generator``, so a run's augmentation is a function of its
seed; channels may stack several aligned images (an input and its target) that are then cropped and tiled alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


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


def s2_tiles(
    imgs: torch.Tensor, img_sizes: Sequence[int], generator: torch.Generator, tile_size: int | None = None
) -> torch.Tensor:
    """MAE with S²: each image of ``(B, C, S, S)`` becomes one tile S² feeds the encoder, ``(B, C, T, T)``.

    ``T`` is ``tile_size`` (the model's size), by default ``S``. A scale of ``n·T`` px is the image resized as
    ``s2_forward`` resizes it (bicubic, float32) and cut into n×n tiles of T; every tile of every scale is equally
    likely (224²+448² of 224² frames: the whole image 1 in 5, each quarter at 2× 1 in 5; 112²+224² of the same
    frames for a 112-px model: the image halved 1 in 5, each native quarter 1 in 5), which is the mix the frozen
    encoder sees under S². A scale of the image's own size is cut, not resized; an upscaled tile of a model-sized
    image is resized alone (``_bicubic_tile``), not the whole n·T image.
    """
    b, side = imgs.shape[0], imgs.shape[-1]
    tile_size = tile_size or side
    splits = [size // tile_size for size in img_sizes]
    counts = torch.tensor([n * n for n in splits])
    ends = counts.cumsum(0)
    pick = torch.randint(int(ends[-1]), (b,), generator=generator)
    scale = torch.bucketize(pick, ends, right=True)  # (B,) index into img_sizes
    tile = pick - (ends - counts)[scale]  # (B,) tile-major index, row = tile // n (split_chessboard's order)
    out = imgs.new_empty(b, imgs.shape[1], tile_size, tile_size)
    for k, (size, n) in enumerate(zip(img_sizes, splits, strict=True)):
        for t in range(n * n):
            sel = ((scale == k) & (tile == t)).nonzero().flatten()
            if not len(sel):
                continue
            (row, col), x = divmod(t, n), imgs[sel]
            if size == side:  # the image's own scale: cut
                out[sel] = x[:, :, row * tile_size : (row + 1) * tile_size, col * tile_size : (col + 1) * tile_size]
            elif side == tile_size:  # upscaled by n: resize only the tile
                out[sel] = _bicubic_tile(x.to(torch.float32), n, row, col).to(imgs.dtype)
            else:  # any other ratio (e.g. the image halved): resize the image whole, then cut
                big = F.interpolate(x.to(torch.float32), size=size, mode="bicubic").to(imgs.dtype)
                out[sel] = big[:, :, row * tile_size : (row + 1) * tile_size, col * tile_size : (col + 1) * tile_size]
    return out


def _bicubic_tile(imgs: torch.Tensor, n: int, row: int, col: int) -> torch.Tensor:
    """Tile (row, col) of ``imgs`` (B, C, S, S) resized bicubically to n·S, without resizing the rest: (B, C, S, S).

    Resizes only the input rows and columns the tile's pixels read (bicubic reads 2 neighbours on each side of a
    sample at (i + 0.5) / n - 0.5, so a margin of 3 covers them) and crops the result. An integer factor n maps crop
    and image onto the same sample positions, and a margin that reaches the image's edge keeps its clamping: the same
    as cutting ``F.interpolate(imgs, size=n·S, mode="bicubic")`` (to float rounding; tested).
    """
    side = imgs.shape[-1]

    def span(i: int) -> tuple[int, int]:  # input rows (or columns) [lo, hi) that tile i at scale n reads
        return max(0, (i * side) // n - 3), min(side, -(-((i + 1) * side) // n) + 3)

    (r0, r1), (c0, c1) = span(row), span(col)
    big = F.interpolate(imgs[:, :, r0:r1, c0:c1], size=(n * (r1 - r0), n * (c1 - c0)), mode="bicubic")
    top, left = row * side - n * r0, col * side - n * c0
    return big[:, :, top : top + side, left : left + side]
