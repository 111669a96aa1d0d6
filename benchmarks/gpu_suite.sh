#!/usr/bin/env bash
# The GPU measurements of the README's numbers table, in one command on a bare CUDA machine with torch.
#
#   bash benchmarks/gpu_suite.sh setup bench pipeline ddp     # stages run in the order given
#   bash benchmarks/gpu_suite.sh setup demos pretrain pretrain_vitl compare
#
# setup     install the wheels in .whl/ (mujoco, zarr, hydra, ... for the machine's Python) into /tmp/site and
#           the EGL loader .debs in .gl/ (MuJoCo renders headless through NVIDIA's EGL); print the machine
# bench     encoder (ours vs s2wrapper, fp32/bf16, batch 1 and 64), control-step latency, training samples/s
# pipeline  the paper setting end to end, stage by stage with wall times: 120 demos -> ViT-B-S² bf16 cache ->
#           default policy 3000 steps -> 16 positions x 3 repeats; plus the feature-cache busy share
# ddp       torchrun --nproc_per_node=1 (NCCL) for 100 steps on the pipeline's cache
# cache     feature caching of the paper setting from the pipeline's store (frames/s, encoder busy share),
#           eager and with the ViT compiled
# compile   encoder throughput with the ViT compiled (model FLOP/s vs the bf16 matmul rate)
# latency_compiled  control-step latency with torch.compile (reduce-overhead: CUDA graphs), compile time
# pretrain  in-domain MAE (the shipped ViT-Ti's recipe, frames and images seen) for ViT-S, ViT-B, ViT-L/256
# compare   cube-pick success of the in-domain ViT-B, ViT-B-S², ViT-L encoders (needs pretrain, pipeline)
#
# Logs and JSON go to runs/gpu_suite/ (packed into $OUT/suite.tgz when $OUT is set, for the device tool);
# each stage prints its wall time and the tail of its log.
set -uo pipefail
LOG=runs/gpu_suite
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 MUJOCO_GL=egl TQDM_MININTERVAL=5 PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORKERS=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
DEMOS=demos/paper_gpu.zarr
ENC_B_S2="encoder=mvp_vitb_s2 encoder.weights=random encoder.dtype=bfloat16"
NOLOG="wandb.mode=disabled"

since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

stage() {  # stage NAME CMD...: run, log to $LOG/NAME.log, print the log's tail and the wall time
  local name=$1; shift
  local t0=$EPOCHREALTIME
  echo "=== $name: $*"
  local limit=${STAGE_TIMEOUT:-400}
  if [ -n "${DEADLINE:-}" ]; then  # seconds after the suite's start by which every stage must have ended
    local left=$(( DEADLINE - SECONDS ))
    limit=$(( left < limit ? left : limit ))
    [ "$limit" -le 5 ] && { echo "=== $name: skipped (deadline)" | tee -a "$LOG/times.txt"; return; }
  fi
  timeout "$limit" "$@" > "$LOG/$name.log" 2>&1
  local rc=$?
  tr '\r' '\n' < "$LOG/$name.log" | grep -v -E "it/s\]|s/it\]|step/s\]|frame/s\]|ep/s\]|^\s*$" | tail -n "${TAIL:-25}"
  echo "=== $name: rc $rc, $(since "$t0") s" | tee -a "$LOG/times.txt"
  pack
}

pack() {  # logs so far into $OUT (the device tool's return folder), so a call cut short still returns them
  if [ -n "${OUT:-}" ] && [ "$OUT" != "$LOG" ]; then tar czf "$OUT/suite.tgz" -C runs gpu_suite; fi
}

do_setup() {
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  local vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  [ -f "$vendor" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  python3 - <<'EOF'
import mujoco, numpy as np, torch, zarr, gymnasium, hydra, s2wrapper
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(), "| mujoco",
      mujoco.__version__, "| zarr", zarr.__version__, "| numpy", np.__version__, "| cpus", __import__("os").cpu_count())
from envs.cube_pick import CubePickEnv
env = CubePickEnv()
obs, _ = env.reset(seed=0)
print("EGL render ok:", {k: v.shape for k, v in obs.items()}, "mean pixel", obs["rgb_front"].mean().round(1))
EOF
}

do_bench() {
  stage bench_encoder python3 benchmarks/bench_encoder.py --device cuda --batch 64 --reps 30 --json "$LOG/bench_encoder.json"
  stage bench_encoder_b256 python3 benchmarks/bench_encoder.py --device cuda --encoders mvp_vitb_s2 --dtypes bfloat16 \
    --batch 256 --reps 10 --json "$LOG/bench_encoder_b256.json"
  stage bench_policy python3 benchmarks/bench_policy.py --device cuda --encoders mvp_vitb mvp_vitb_s2 mvp_vitl \
    --dtypes bfloat16 float32 --reps 200 --json "$LOG/bench_policy.json"
  stage bench_train_paper python3 benchmarks/bench_train.py --device cuda --encoder mvp_vitb_s2 --readout cls \
    --policy default --reps 50
  stage bench_train_makerun python3 benchmarks/bench_train.py --device cuda --encoder vitti_s2_random \
    --readout cls+grid --policy small --reps 50
}

do_demos() {  # the pipeline's demo store alone
  stage p1_record python3 scripts/record_demos.py out=$DEMOS n_episodes=120 workers=$WORKERS resume=true
}

do_pipeline() {
  local t0=$EPOCHREALTIME
  stage p1_record python3 scripts/record_demos.py out=$DEMOS n_episodes=120 workers=$WORKERS resume=true
  stage p2_cache python3 scripts/cache_features.py demos=$DEMOS $ENC_B_S2 encoder.readout=cls batch_size=256
  stage p3_train python3 scripts/train_bc.py name=paper_gpu demos=$DEMOS $ENC_B_S2 encoder.readout=cls \
    policy=default steps=3000 $NOLOG
  stage p4_eval python3 scripts/eval.py checkpoint=runs/paper_gpu/checkpoints/last repeats=3 n_envs=16 \
    max_steps=100 videos=2 wandb.mode=disabled
  echo "=== paper pipeline end to end: $(since "$t0") s" | tee -a "$LOG/times.txt"
  cp runs/paper_gpu/eval/results.json "$LOG/paper_gpu_results.json" 2>/dev/null
  cp runs/paper_gpu/metrics.jsonl "$LOG/paper_gpu_metrics.jsonl" 2>/dev/null
}

do_ddp() {
  stage ddp_nccl torchrun --standalone --nproc_per_node=1 scripts/train_bc.py name=ddp_smoke demos=$DEMOS \
    $ENC_B_S2 encoder.readout=cls policy=default steps=100 val_every=50 save_every=50 $NOLOG
  stage ddp_reference python3 scripts/train_bc.py name=ddp_reference demos=$DEMOS \
    $ENC_B_S2 encoder.readout=cls policy=default steps=100 val_every=50 save_every=50 $NOLOG
  for n in ddp_smoke ddp_reference; do tail -n 1 "runs/$n/metrics.jsonl" | sed "s/^/$n /"; done
}

do_cache() {  # feature caching of the paper setting from the pipeline's demo store: eager, then compiled
  stage bench_features python3 benchmarks/bench_features.py --demos $DEMOS --encoder mvp_vitb_s2 --dtype bfloat16 \
    --batch 256
  stage bench_features_compiled python3 benchmarks/bench_features.py --demos $DEMOS --encoder mvp_vitb_s2 \
    --dtype bfloat16 --batch 256 --compile
}

do_compile() {
  stage bench_encoder_compiled python3 benchmarks/bench_encoder_compiled.py --device cuda \
    --encoders mvp_vitb mvp_vitb_s2 --dtypes bfloat16 --batch 64 --reps 30 --json "$LOG/bench_encoder_compiled.json"
}

do_latency_compiled() {
  stage bench_policy_compile python3 benchmarks/bench_policy.py --device cuda --encoders mvp_vitb_s2 \
    --dtypes bfloat16 --reps 300 --compile reduce-overhead --json "$LOG/bench_policy_compile.json"
}

do_pretrain() {  # ViT-S and ViT-B on the ViT-Ti's 8000 frames (224²); ViT-S comes back in $OUT (split)
  mae vits-mae-cubepick
  mae vitb-mae-cubepick
  if [ -n "${OUT:-}" ] && [ -f runs/weights/vits-mae-cubepick.pth ]; then
    split -b 15M runs/weights/vits-mae-cubepick.pth "$OUT/vits-mae-cubepick.pth.part-"
    cp runs/weights/vits-mae-cubepick.json "$OUT/"
  fi
}

do_pretrain_vitl() {  # ViT-L/16 at 256²: the same scenes rendered at 256² (another frame store)
  mae vitl-256-mae-cubepick data.generator.image_size=256
}

mae() {  # mae NAME [OVERRIDES...]: the shipped ViT-Ti's recipe (steps, batch, lr, frames), MAE's decoder size
  local name=$1; shift
  stage "mae_$name" python3 scripts/pretrain_mae.py name=$name model.variant=$name export_name=$name \
    data.generator.workers=$WORKERS threads=8 wandb.mode=disabled model.decoder_dim=null model.decoder_depth=null \
    model.decoder_heads=null export_dir=runs/weights recon_every=600 ckpt_every=1200 "$@"
  cp runs/weights/$name.json "$LOG/" 2>/dev/null
  tail -n 1 "runs/$name/log.jsonl" 2>/dev/null | sed "s/^/$name /"
}

do_compare() {
  export S2ROBOT_WEIGHTS_DIR=runs/weights
  stage compare python3 scripts/compare_encoders.py "encoders=[${ENCODERS:-vitb_mae,vitb_s2_mae,vitl_mae}]" \
    "seeds=[${SEEDS:-0}]" out=runs/compare_gpu base.n_demos=120 base.record_workers=$WORKERS \
    base.train.demos=$DEMOS base.train.name=gpu base.train.steps=3000 base.train.wandb.mode=disabled \
    base.eval.n_envs=16 base.eval.repeats=3 base.eval.max_steps=100 base.eval.videos=0 \
    base.eval.wandb.mode=disabled placement.dtype=bfloat16
  cp runs/compare_gpu/comparison.* "$LOG/" 2>/dev/null
  for f in runs/compare_gpu/*/eval/results.json runs/gpu-*/eval/results.json; do
    [ -f "$f" ] && cp "$f" "$LOG/$(basename "$(dirname "$(dirname "$f")")")-results.json"
  done
}

for s in "$@"; do
  "do_$s"
done
echo "=== times"; cat "$LOG/times.txt"
pack
