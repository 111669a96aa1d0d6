"""Encoder benchmark: our S² (one batched ViT call) vs the reference ``s2wrapper.forward`` on the same ViT.

Prints, per encoder and dtype: params, GFLOPs per frame, batch-1 latency and batch-B throughput for both,
the speed-up (reference time / ours), and our model FLOP/s as a share of a matmul rate measured in the same
run. Random weights (speed does not depend on them).

    python benchmarks/bench_encoder.py                      # ViT-B, ViT-B-S², ViT-L on the default device
    python benchmarks/bench_encoder.py --quick              # CPU-sized: ViT-Ti, ViT-Ti-S², make run's ViT-Ti-S² at 112²
    python benchmarks/bench_encoder.py --device cuda --batch 64 --reps 30
"""

from __future__ import annotations

import argparse

import s2wrapper
import torch

from s2robot.common.bench import attention_kernel, cuda_kernels, device_name, matmul_rates, time_interleaved, write_json
from s2robot.common.device import DTYPES, resolve_device
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder
from s2robot.vision.s2 import s2_forward
from s2robot.vision.vit import VARIANTS, flops_per_image, param_count


def bench_one(name: str, dtype: str, device: torch.device, batch: int, reps: int, rate: float) -> dict:
    enc = FrozenS2Encoder(EncoderConfig.from_name(name, weights="random", dtype=dtype, device=str(device)))
    cfg, vit = enc.cfg, enc.vit
    kwargs = {"img_sizes": enc.img_sizes, "max_split_size": cfg.tile_size(), "num_prefix_token": 1}
    row = {"encoder": name, "variant": cfg.variant, "dtype": dtype, "img_sizes": enc.img_sizes,
           "params_M": param_count(vit.cfg) / 1e6, "gflops_per_frame": cfg.flops_per_frame() / 1e9}
    base = cfg.model_size()
    for b in (1, batch):
        x = torch.rand(b, 3, base, base, device=device)
        fns = [lambda x=x: s2_forward(enc._vit, x, **kwargs), lambda x=x: s2wrapper.forward(enc._vit, x, **kwargs)]
        with torch.inference_mode():
            ours, ref = time_interleaved(fns, device, reps=reps, warmup=2)
        row[f"b{b}"] = {"ours_ms": ours.median * 1e3, "ref_ms": ref.median * 1e3, "speedup": ref.median / ours.median,
                        "ours_fps": b / ours.median, "ref_fps": b / ref.median}
    with torch.inference_mode():  # which SDPA kernel ran (CUDA only)
        row["attention"] = attention_kernel(cuda_kernels(lambda: s2_forward(enc._vit, x, **kwargs), device))
    row["model_tflops"] = cfg.flops_per_frame() * row[f"b{batch}"]["ours_fps"] / 1e12
    row["share_of_matmul"] = row["model_tflops"] * 1e12 / rate
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoders", nargs="+", default=["mvp_vitb", "mvp_vitb_s2", "mvp_vitl"])
    p.add_argument("--quick", action="store_true",
                   help="CPU-sized run: vitti_random, vitti_s2_random and make run's vitti112_s2_s2mae")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=None, help="throughput batch (default 4 on CPU, 64 on GPU)")
    p.add_argument("--reps", type=int, default=None, help="timed runs each (default 3 CPU, 30 GPU)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args()
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    batch, reps = args.batch or (64 if gpu else 4), args.reps or (30 if gpu else 3)
    encoders = ["vitti_random", "vitti_s2_random", "vitti112_s2_s2mae"] if args.quick else args.encoders
    print(f"{'variant':22s} {'img':>4s} {'params':>8s} {'GFLOP/img':>9s}")
    for name, v in VARIANTS.items():
        print(f"{name:22s} {v.img_size:4d} {param_count(v) / 1e6:7.1f}M {flops_per_image(v) / 1e9:9.2f}")
    rates = matmul_rates(device, args.dtypes)
    print(f"device: {device_name(device)}; torch {torch.__version__}; batch {batch}; median of {reps}")
    print("matmul rate: " + ", ".join(f"{dt} {r / 1e12:.2f} TFLOP/s" for dt, r in rates.items()))
    print(
        f"{'encoder':18s} {'dtype':8s} {'params':>7s} {'GFLOP/f':>8s} | {'b1 ours':>9s} {'b1 ref':>9s} "
        f"{'speedup':>7s} | {'fps ours':>9s} {'fps ref':>9s} {'speedup':>7s} | {'TFLOP/s':>7s} {'%mm':>5s}"
    )
    rows = []
    for name in encoders:
        for dt in args.dtypes:
            r = bench_one(name, dt, device, batch, reps, rates[dt])
            rows.append(r)
            b1, bb = r["b1"], r[f"b{batch}"]
            print(
                f"{name:18s} {dt:8s} {r['params_M']:6.1f}M {r['gflops_per_frame']:8.1f} | "
                f"{b1['ours_ms']:7.1f}ms {b1['ref_ms']:7.1f}ms {b1['speedup']:6.2f}x | "
                f"{bb['ours_fps']:9.1f} {bb['ref_fps']:9.1f} {bb['speedup']:6.2f}x | "
                f"{r['model_tflops']:7.3f} {100 * r['share_of_matmul']:4.0f}% {r['attention']:>9s}",
                flush=True,
            )
    # The matmul ceiling again after the rows, keeping the higher: other load during either measurement only
    # lowers it. Shares printed above used the first measurement.
    after = matmul_rates(device, args.dtypes)
    if any(after[dt] > 1.1 * rates[dt] for dt in rates):
        rates = {dt: max(rates[dt], after[dt]) for dt in rates}
        for r in rows:
            r["share_of_matmul"] = r["model_tflops"] * 1e12 / rates[r["dtype"]]
        print("matmul rate re-measured higher after the rows: " + ", ".join(
            f"{r['encoder']} {r['dtype']} {100 * r['share_of_matmul']:.0f}%" for r in rows))
    write_json(args.json, {"device": device_name(device), "batch": batch, "reps": reps, "matmul_flops": rates,
                           "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
