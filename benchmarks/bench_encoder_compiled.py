"""Encoder throughput with the ViT ``torch.compile``d (``EncoderConfig.compile``) vs eager, side by side.

Per encoder and dtype: frames/s of our S² at the throughput batch, eager and compiled, the model FLOP/s of each
as a share of the matmul rate measured in the same run, and the compile time (the compiled version's first call).

    python benchmarks/bench_encoder_compiled.py --device cuda --encoders mvp_vitb mvp_vitb_s2 --dtypes bfloat16
"""

from __future__ import annotations

import argparse

import torch

from s2robot.common.bench import device_name, elapsed, matmul_rates, time_interleaved, write_json
from s2robot.common.device import DTYPES, resolve_device
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoders", nargs="+", default=["mvp_vitb", "mvp_vitb_s2"])
    p.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=sorted(DTYPES))
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args()
    device = resolve_device(args.device)
    rates = matmul_rates(device, args.dtypes)
    print(f"device: {device_name(device)}; torch {torch.__version__}; batch {args.batch}; median of {args.reps}")
    print("| encoder | dtype | eager frames/s | compiled frames/s | eager %mm | compiled %mm | compile [s] |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name in args.encoders:
        for dt in args.dtypes:
            eager_enc, compiled_enc = (FrozenS2Encoder(EncoderConfig.from_name(
                name, weights="random", dtype=dt, device=str(device), compile=c)) for c in (None, "default"))
            size = eager_enc.cfg.model_size()
            x = torch.rand(args.batch, 3, size, size, device=device)
            fns = [lambda e=eager_enc, x=x: e(x), lambda e=compiled_enc, x=x: e(x)]
            compile_s = elapsed(lambda f=fns[1]: (f(), _sync(device)))  # the first call compiles
            eager, compiled = time_interleaved(fns, device, args.reps, warmup=2)
            flops = eager_enc.cfg.flops_per_frame() * args.batch
            row = {"encoder": name, "dtype": dt, "batch": args.batch, "compile_s": compile_s,
                   "eager_fps": args.batch / eager.median, "compiled_fps": args.batch / compiled.median,
                   "eager_share": flops / eager.median / rates[dt],
                   "compiled_share": flops / compiled.median / rates[dt]}
            rows.append(row)
            print(f"| {name} | {dt} | {row['eager_fps']:,.1f} | {row['compiled_fps']:,.1f} | {row['eager_share']:.0%} "
                  f"| {row['compiled_share']:.0%} | {compile_s:.1f} |", flush=True)
    write_json(args.json, {"device": device_name(device), "matmul_flops": rates, "rows": rows})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
