"""Benchmark MAE-with-S² tile picking: resizing only each picked tile against resizing whole images.

Usage: python benchmarks/bench_s2_tiles.py [--batch 64] [--size 224] [--sizes 224 448] [--reps 10]

"ours" is ``s2robot.vision.augment.s2_tiles`` (each picked tile resized alone, ``_bicubic_tile``); "ref" resizes
every image picked for a larger scale whole and cuts its tile, as ``s2_tiles`` did first. Both get the same images
and generator seed, so they pick the same tiles (checked); timed interleaved, median of ``--reps``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from s2robot.common.bench import time_interleaved
from s2robot.vision.augment import s2_tiles
from s2robot.vision.s2 import split_chessboard


def whole_image_tiles(imgs: torch.Tensor, img_sizes: list[int], seed: int) -> torch.Tensor:
    """The reference: the same picks as ``s2_tiles`` (same generator draws), each from the whole resized image."""
    side, g = imgs.shape[-1], torch.Generator().manual_seed(seed)
    splits = [size // side for size in img_sizes]
    counts = torch.tensor([n * n for n in splits])
    ends = counts.cumsum(0)
    pick = torch.randint(int(ends[-1]), (len(imgs),), generator=g)
    scale = torch.bucketize(pick, ends, right=True)
    tile = pick - (ends - counts)[scale]
    out = imgs.clone()
    for k, (size, n) in enumerate(zip(img_sizes, splits, strict=True)):
        sel = (scale == k).nonzero().flatten()
        if n > 1 and len(sel):
            big = F.interpolate(imgs[sel], size=size, mode="bicubic")  # (b_k, C, nS, nS)
            tiles = split_chessboard(big, n).view(n * n, len(sel), *imgs.shape[1:])  # (n², b_k, C, S, S)
            out[sel] = tiles[tile[sel], torch.arange(len(sel))]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()
    imgs = torch.rand(a.batch, 3, a.size, a.size)  # (B, 3, S, S) float32, as pretraining feeds it
    ours = s2_tiles(imgs, a.sizes, torch.Generator().manual_seed(0))
    ref = whole_image_tiles(imgs, a.sizes, 0)
    err = (ours - ref).abs().max().item()
    print(f"threads {torch.get_num_threads()}, batch {a.batch} × {a.size}², scales {a.sizes}; ours vs ref max |Δ| "
          f"{err:.1e}")
    if err > 1e-4:
        raise SystemExit("the two disagree: s2_tiles no longer picks or resizes like the reference")
    t_ours, t_ref = time_interleaved([lambda: s2_tiles(imgs, a.sizes, torch.Generator().manual_seed(0)),
                                      lambda: whole_image_tiles(imgs, a.sizes, 0)], torch.device("cpu"), a.reps)
    print(f"| s2_tiles, batch {a.batch} | ours {t_ours.median * 1e3:.1f} ms | ref {t_ref.median * 1e3:.1f} ms | "
          f"speed-up {t_ref.median / t_ours.median:.2f}× |")


if __name__ == "__main__":
    main()
