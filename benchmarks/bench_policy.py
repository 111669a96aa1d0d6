"""Control-loop latency at batch 1: encode one camera frame with the frozen (S²) encoder + one policy step.

Per encoder (MVP ViT-S / ViT-B / ViT-L, each without and with S²) and dtype: median and p99 latency of a
whole control step (uint8 frame in, action out: preprocessing, S² encoding, ``policy.act``), and the share
of it that the encoder takes. Random weights (latency does not depend on them). A 10 Hz arm has 100 ms.

    python benchmarks/bench_policy.py                                  # all six encoders, fp32 + bf16
    python benchmarks/bench_policy.py --encoders mvp_vitb_s2 --device cuda --reps 200 [--compile]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from s2robot.common.bench import device_name, elapsed, time_interleaved, write_json
from s2robot.common.device import resolve_device
from s2robot.data.normalize import Normalizer
from s2robot.policy.configuration import PolicyConfig
from s2robot.policy.modeling import ChunkTransformerPolicy
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder

ENCODERS = ("mvp_vits", "mvp_vits_s2", "mvp_vitb", "mvp_vitb_s2", "mvp_vitl", "mvp_vitl_s2")


def control_step(name: str, dtype: str, device: torch.device, compile_: str | None) -> tuple[dict, object, object]:
    """(row, step fn, encode-only fn) for one encoder."""
    enc = FrozenS2Encoder(EncoderConfig.from_name(name, weights="random", dtype=dtype, device=str(device),
                                                  compile=compile_))
    f = enc.feature_dim
    rng = np.random.default_rng(0)
    norm = Normalizer.fit({"proprio": rng.normal(size=(64, 8)), "action": rng.normal(size=(64, 8)),
                           "feat_front": rng.normal(size=(64, f))})
    policy = ChunkTransformerPolicy(PolicyConfig(execution="ensemble"), {"feat_front": f}, normalizer=norm)
    policy = policy.to(device).eval()
    policy.reset()
    size = enc.cfg.model_size()
    frame = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    proprio = np.zeros((1, 8), np.float32)

    def step() -> torch.Tensor:  # re-planning every step (ensemble): the worst case per step
        feat = enc(frame).to(device)
        return policy.act({"feat_front": feat, "proprio": proprio})

    row = {"encoder": name, "dtype": dtype, "img_sizes": enc.img_sizes, "feature_dim": f,
           "gflops_per_frame": enc.cfg.flops_per_frame() / 1e9}
    return row, step, lambda: enc(frame)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--reps", type=int, default=0, help="timed steps per encoder (0: 100 on GPU, 20 on CPU)")
    p.add_argument("--compile", default=None, help="torch.compile mode for the ViT (e.g. reduce-overhead: CUDA "
                   "graphs); the first step's time (compilation) is reported")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args()
    device = resolve_device(args.device)
    reps = args.reps or (100 if device.type == "cuda" else 20)
    print(f"control-step latency at batch 1 on {device_name(device)}, {reps} steps each\n")
    print(f"compile: {args.compile or 'off (eager)'}")
    print("| encoder | dtype | scales | GFLOPs/frame | step median [ms] | step p99 [ms] | encoder share | first [s] |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.encoders:
        for dtype in args.dtypes:
            row, step, encode = control_step(name, dtype, device, args.compile)
            with torch.inference_mode():
                row["first_call_s"] = elapsed(lambda s=step: (s(), torch.cuda.synchronize(device)
                                                              if device.type == "cuda" else None))
            n = reps if row["gflops_per_frame"] < 100 or device.type == "cuda" else max(5, reps // 4)
            with torch.inference_mode():
                full, enc = time_interleaved([step, encode], device, reps=n, warmup=3)
            row |= {"median_ms": full.median * 1e3, "p99_ms": full.p99 * 1e3, "encoder_ms": enc.median * 1e3,
                    "n": n, "device": device_name(device)}
            rows.append(row)
            print(f"| {name} | {dtype} | {'+'.join(f'{s}²' for s in row['img_sizes'])} | "
                  f"{row['gflops_per_frame']:.1f} | {row['median_ms']:.1f} | {row['p99_ms']:.1f} | "
                  f"{enc.median / full.median:.0%} | {row['first_call_s']:.1f} |", flush=True)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
