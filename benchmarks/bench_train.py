"""Training benchmark: policy samples/s from the feature cache vs with the encoder in the loop.

Side by side in one run, on synthetic data shaped like the paper setting (120 demos × 26 steps, one camera):
- cached: a training step of the default policy (``PolicyConfig()``) on a batch gathered from
  an in-memory feature cache (what ``train_bc.py`` does);
- encoder in the loop: the same step plus encoding every sample's To=16 frames with the frozen encoder
  (what training without a cache would cost; measured on a slice of the batch and scaled per sample).
Prints samples/s for both, their ratio, and the projected wall time of the default config (3000 steps of
batch 64) from the measured rate.

    python benchmarks/bench_train.py                                  # CPU: ViT-Ti-S² features (384-D)
    python benchmarks/bench_train.py --device cuda --encoder mvp_vitb_s2 --dtype bfloat16
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from s2robot.common.bench import device_name, time_interleaved
from s2robot.common.device import resolve_device
from s2robot.data.dataset import WindowDataset
from s2robot.data.normalize import Normalizer
from s2robot.policy.configuration import POLICY_PRESETS, PolicyConfig
from s2robot.policy.modeling import ChunkTransformerPolicy
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder
from s2robot.workflows.train import TrainConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", default="vitti_s2_random")
    p.add_argument("--dtype", default="bfloat16", help="encoder dtype")
    p.add_argument("--readout", default=None, help="encoder readout (default: the preset's)")
    p.add_argument("--policy", default="default", choices=sorted(POLICY_PRESETS), help="policy preset")
    p.add_argument("--device", default="auto")
    p.add_argument("--demos", type=int, default=120)
    p.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--encode-frames", type=int, default=32, help="frames encoded per timed encoder call")
    args = p.parse_args()
    device = resolve_device(args.device)
    extra = {"readout": args.readout} if args.readout else {}
    enc = FrozenS2Encoder(EncoderConfig.from_name(args.encoder, weights="random", dtype=args.dtype,
                                                  device=str(device), **extra))
    f, size = enc.feature_dim, enc.cfg.model_size()
    rng = np.random.default_rng(0)
    n = args.demos * 26
    data = {"feat_front": rng.normal(size=(n, f)).astype(np.float32),
            "proprio": rng.normal(size=(n, 8)).astype(np.float32),
            "action": rng.normal(size=(n, 8)).astype(np.float32)}
    ends = np.arange(26, n + 1, 26)
    cfg = PolicyConfig(**POLICY_PRESETS[args.policy])
    ds = WindowDataset(data, ends, t_obs=cfg.t_obs, t_act=cfg.t_act)
    policy = ChunkTransformerPolicy(cfg, {"feat_front": f}, normalizer=Normalizer.fit(data)).to(device)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    amp = device.type == "cuda"

    def cached_step() -> None:
        idx = rng.integers(0, len(ds), args.batch)
        batch = {k: v.to(device, non_blocking=True) for k, v in ds.get_batch(idx).items()}
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            loss = policy.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()

    frames = rng.integers(0, 256, (args.encode_frames, size, size, 3), dtype=np.uint8)
    train_t, enc_t = time_interleaved([cached_step, lambda: enc(frames)], device, reps=args.reps, warmup=2)
    per_sample_cached = train_t.median / args.batch
    per_sample_loop = per_sample_cached + cfg.t_obs * enc_t.median / args.encode_frames
    steps = TrainConfig.steps
    print(f"device: {device_name(device)}; policy {sum(p.numel() for p in policy.parameters()) / 1e6:.2f} M params, "
          f"{args.policy} policy, batch {args.batch}, features {args.encoder} ({f}-D, encoder {args.dtype}); "
          f"{len(ds)} windows")
    print("| mode | samples/s | default run (3000 × 64) |")
    print("|---|---|---|")
    print(f"| from the feature cache | {1 / per_sample_cached:,.0f} | {steps * train_t.median / 60:.1f} min |")
    print(f"| encoder in the loop (16 frames/sample) | {1 / per_sample_loop:,.1f} | "
          f"{steps * args.batch * per_sample_loop / 3600:.1f} h |")
    print(f"encoder in the loop costs {per_sample_loop / per_sample_cached:,.0f}× the cached step per sample")


if __name__ == "__main__":
    main()
