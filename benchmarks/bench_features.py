"""Feature-cache benchmark: frames/s of build_feature_cache and the share of wall time the encoder is busy.

Encoder-only throughput (frames already in memory) over whole-cache throughput (reading zarr, encoding,
writing) is the encoder's busy share: 100% means reading and writing are fully hidden behind encoding.

    python benchmarks/bench_features.py --demos demos/cube_pick.zarr --encoder mvp_vitb_s2 --dtype bfloat16
    python benchmarks/bench_features.py --record 4                      # CPU: records 4 demos first
    python benchmarks/bench_features.py --encoder vitti_s2_mae --dtype auto --batch 256 --max-batch 0 32
        # also the encoder with ViT calls of at most N tiles (0: all tiles of a batch at once), side by side
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from s2robot.common.bench import device_name, elapsed, time_interleaved
from s2robot.data.episode_groups import episode_groups, read_group
from s2robot.data.features import build_feature_cache
from s2robot.data.store import EpisodeStore
from s2robot.sim.env import EnvConfig
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder
from s2robot.workflows.record import RecordConfig, record_demos


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demos", default=None, help="demo store; default: record --record demos first")
    p.add_argument("--record", type=int, default=4)
    p.add_argument("--encoder", default="vitti_s2_random")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--compile", action="store_true", help="torch.compile the ViT (first call = compile time)")
    p.add_argument("--max-batch", type=int, nargs="+", default=None,
                   help="also time the encoder alone with each of these max_batch values (0: none), interleaved")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        demos = Path(args.demos) if args.demos else Path(tmp) / "d.zarr"
        if not args.demos:
            record_demos(RecordConfig(env=EnvConfig(), out=str(demos), n_episodes=args.record), progress=False)
        enc = FrozenS2Encoder(EncoderConfig.from_name(args.encoder, weights="random", dtype=args.dtype,
                                                      compile="default" if args.compile else None))
        store = EpisodeStore.open(demos)
        frames = store.get_steps("rgb_front", 0, store.n_steps)
        batches = [frames[i : i + args.batch] for i in range(0, len(frames) - args.batch + 1, args.batch)]
        warm = elapsed(lambda: enc(batches[0]))  # warm up (and compile)
        (only,) = time_interleaved([lambda: [enc(b) for b in batches]], enc.device, reps=1, warmup=0)
        t0 = time.perf_counter()
        build_feature_cache(demos, enc, out=Path(tmp) / "cache.zarr", batch_size=args.batch, progress=False)
        full = time.perf_counter() - t0
        groups = episode_groups(store.episode_ends, 0, args.batch)
        read = elapsed(lambda: [read_group(store, g) for g in groups])
        chunked = _max_batch_rates(args, batches) if args.max_batch else []
    n, n_only = len(frames), sum(len(b) for b in batches)
    print(f"{args.encoder} ({args.dtype}{', compiled' if args.compile else ''}) on {device_name(enc.device)}; "
          f"{n} frames, batch {args.batch}; first call {warm:.1f} s")
    print(f"reading only   {n / read:8.1f} frames/s (zarr read + decompress, one thread)")
    print(f"encoder only   {n_only / only.median:8.1f} frames/s")
    busy = only.median * n / n_only / full
    print(f"feature cache  {n / full:8.1f} frames/s   encoder busy {100 * busy:.0f}% of wall time")
    for m, fps in chunked:
        ratio = fps / chunked[0][1]
        print(f"encoder only, max_batch {m or 'none':>4}: {fps:8.1f} frames/s   ×{ratio:.2f} vs the first")


def _max_batch_rates(args: argparse.Namespace, batches: list) -> list[tuple[int, float]]:
    """(max_batch, frames/s) of the encoder alone for each ``--max-batch``, timed interleaved (median of 3)."""
    encs = [FrozenS2Encoder(EncoderConfig.from_name(args.encoder, weights="random", dtype=args.dtype,
                                                    max_batch=m or None)) for m in args.max_batch]
    times = time_interleaved([lambda e=e: [e(b) for b in batches] for e in encs], encs[0].device, reps=3, warmup=1)
    n = sum(len(b) for b in batches)
    return [(m, n / t.median) for m, t in zip(args.max_batch, times, strict=True)]


if __name__ == "__main__":
    main()
