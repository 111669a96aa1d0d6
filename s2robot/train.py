"""Behavior-cloning training of the chunk transformer from a feature cache.

``train(cfg)`` builds the feature cache if it is missing (``s2robot.features``), splits episodes into
train/val, fits the ``Normalizer`` on the training split, and runs AdamW with linear warmup + cosine decay,
gradient clipping, optional EMA and bf16 autocast on CUDA. It writes to ``runs/<name>/``:

- ``checkpoints/last.pt`` (every ``save_every`` steps and at the end) and ``checkpoints/best.pt`` (best
  validation loss, or best success rate when a periodic evaluator is given): model, EMA, normalizer (in the
  model's state dict), full config, encoder fingerprint, step, optimizer, scheduler and RNG states;
- ``metrics.jsonl``: one JSON line per logged step; plus wandb (offline by default).

Re-running the same command resumes from ``last.pt`` and continues exactly as if never stopped: the batch
at step s is a pure function of (seed, s), and every RNG state is restored. Under
``torchrun --nproc_per_node=K`` it trains with DDP (NCCL on GPUs, gloo on CPU): each rank takes its shard
of the same global batch; only rank 0 logs, validates and saves.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from tqdm import tqdm

from s2robot.dataset import WindowDataset, split_episodes
from s2robot.encoder import EncoderConfig, FrozenS2Encoder, encoder_fingerprint
from s2robot.env import EnvConfig
from s2robot.features import build_feature_cache, default_cache_path, open_feature_cache
from s2robot.normalize import Normalizer
from s2robot.optim import lr_factor, param_groups, save_checkpoint
from s2robot.policy import FEAT_PREFIX, ChunkTransformerPolicy, PolicyConfig
from s2robot.store import EpisodeStore
from s2robot.weights import resolve_weights

CHECKPOINT_VERSION = 1
# What a checkpoint must agree on with the config to resume from it (the rest may change, e.g. steps).
RESUME_KEYS = ("policy", "seed", "batch_size", "val_fraction")


@dataclass
class WandbConfig:
    """wandb logging. mode: ``offline`` (default: no account needed, ``wandb sync runs/<name>/wandb``
    later), ``online``, or ``disabled``."""

    mode: str = "offline"
    project: str = "s2robot"
    entity: str | None = None


@dataclass
class TrainConfig:
    """``scripts/train_bc.py`` (``configs/train_bc.yaml``, composing ``encoder/``, ``policy/``, ``env/``).

    name: run name; everything goes to ``<runs_dir>/<name>/``
    demos / cache: demo store, and its feature cache (default path from the encoder fingerprint; built
        when missing)
    steps, batch_size (global, split over DDP ranks), lr, weight_decay, warmup_steps, grad_clip
    ema_decay: 0 disables the EMA; else the EMA weights are what evaluation and ``best.pt`` use
    val_fraction / val_every: held-out episodes and how often their loss is computed [steps]
    eval_every: periodic rollout evaluation [steps] (0: off), through the evaluator given to ``train``
    amp: bf16 autocast on CUDA (ignored on CPU)
    overwrite: start over, deleting the run's checkpoints (by default a re-run resumes)
    """

    name: str = "cube_pick"
    runs_dir: str = "runs"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    demos: str = "demos/cube_pick.zarr"
    cache: str | None = None
    cache_batch_size: int = 256
    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    val_fraction: float = 0.1
    val_every: int = 250
    eval_every: int = 0
    save_every: int = 500
    log_every: int = 25
    device: str = "auto"
    amp: bool = True
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "val_every", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip <= 0 or self.eval_every < 0:
            raise ValueError("need lr > 0, warmup_steps ≥ 0, grad_clip > 0, eval_every ≥ 0")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def config_from_dict(d: Mapping[str, Any]) -> TrainConfig:
    """A ``TrainConfig`` from ``asdict`` output (e.g. a checkpoint's ``config``); unknown keys are errors."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), dict(d)))


# ------------------------------------------------------------------------------------------ pieces
def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Sample indices of this rank's shard of the global batch at ``step``: a pure function of its inputs.

    Epoch e = step // (n // batch_size) walks a permutation of range(n) drawn from (seed, e), dropping the
    last partial batch; rank r takes the r-th contiguous shard of each global batch.
    """
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} training windows")
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be divisible by the {world} DDP processes")
    per_epoch = n // batch_size
    epoch, j = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    batch = perm[j * batch_size : (j + 1) * batch_size]
    shard = batch_size // world
    return batch[rank * shard : (rank + 1) * shard]


class EMA:
    """Exponential moving average of a module's parameters and buffers (decay warms up as in timm)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.state[k].lerp_(v.detach(), 1.0 - d)
            else:
                self.state[k].copy_(v)


def fit_normalizer(data: Mapping[str, np.ndarray], episode_ends: np.ndarray, train_episodes: np.ndarray,
                   feature_keys: tuple[str, ...], normalize_features: bool) -> Normalizer:
    """Gaussian statistics of proprio, action (and features) over the steps of the training episodes."""
    starts = np.concatenate([[0], episode_ends[:-1]])
    rows = np.concatenate([np.arange(starts[e], episode_ends[e]) for e in train_episodes])
    keys = ["proprio", "action", *(feature_keys if normalize_features else ())]
    return Normalizer.fit({k: np.asarray(data[k])[rows] for k in keys})


# ------------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and world > 1:
        device = f"cuda:{local_rank}"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world == 1:
        return DistInfo(), dev
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank), dev


# ------------------------------------------------------------------------------------ checkpoints
def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}  # numpy: only seeded Generators
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A training checkpoint, checked to be one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with scripts/train_bc.py")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "s2robot.BCCheckpoint":
        raise ValueError(f"{path} is not an s2robot policy checkpoint (made by scripts/train_bc.py)")
    return ckpt


def build_policy(cfg: PolicyConfig, shape: Mapping[str, Any], normalizer: Normalizer | None = None
                 ) -> ChunkTransformerPolicy:
    """A policy for ``shape`` = {feature_dims, proprio_dim, action_dim} (as stored in checkpoints)."""
    return ChunkTransformerPolicy(cfg, shape["feature_dims"], shape["proprio_dim"], shape["action_dim"],
                                  normalizer)


def load_policy(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True
                ) -> tuple[ChunkTransformerPolicy, dict[str, Any]]:
    """The policy of a checkpoint (its EMA weights when present and ``use_ema``), in eval mode."""
    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"])
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    normalizer = Normalizer.from_state_dict(state, prefix="normalizer.")
    policy = build_policy(cfg.policy, ckpt["policy_shape"], normalizer)
    policy.load_state_dict(state)
    return policy.to(device).eval(), ckpt


# ------------------------------------------------------------------------------------------ data
def prepare_cache(cfg: TrainConfig, dist_info: DistInfo = DistInfo(), progress: bool = True) -> tuple[Path, str]:
    """(path, encoder fingerprint) of the feature cache for (cfg.demos, cfg.encoder), built by rank 0 when
    missing or stale."""
    if not Path(cfg.demos).exists() and not (cfg.cache and Path(cfg.cache).exists()):
        raise FileNotFoundError(f"demo store {cfg.demos} does not exist; record demos first with "
                                "scripts/record_demos.py (or set demos=/path/to/store.zarr)")
    digest = resolve_weights(cfg.encoder.variant, cfg.encoder.weights, cfg.encoder.seed,
                             cfg.encoder.allow_download).digest
    fingerprint = encoder_fingerprint(cfg.encoder, digest)
    path = Path(cfg.cache) if cfg.cache else default_cache_path(cfg.demos, fingerprint)
    if dist_info.is_main:
        ready = False
        if path.exists() and Path(cfg.demos).exists():
            cache = open_feature_cache(path, fingerprint)
            ready = cache.attrs["source"]["fingerprint"] == EpisodeStore.open(cfg.demos).fingerprint
        elif path.exists():
            open_feature_cache(path, fingerprint)
            ready = True  # a cache without its demo store beside it: trust its key
        if not ready:
            encoder = FrozenS2Encoder(cfg.encoder)
            if encoder.weights.is_random and progress:
                print(f"WARNING: encoder {cfg.encoder.variant} has RANDOM weights: success numbers will not "
                      "mean anything about pretrained features")
            build_feature_cache(cfg.demos, encoder, path, cfg.cache_batch_size, progress=progress)
            del encoder
    if dist_info.world > 1:
        dist.barrier()
    return path, fingerprint


@dataclass
class TrainData:
    train: WindowDataset
    val: WindowDataset | None
    normalizer: Normalizer
    shape: dict[str, Any]  # feature_dims, proprio_dim, action_dim
    cache_path: Path
    cache_attrs: dict[str, Any]


def load_data(cfg: TrainConfig, cache_path: Path, fingerprint: str | None = None) -> TrainData:
    """Windows of the cache's train/val episodes and the normalizer fit on the training split."""
    cache = open_feature_cache(cache_path, fingerprint)
    if cache.n_episodes == 0:
        raise ValueError(f"feature cache {cache_path} holds no episodes: record demos first")
    data = {k: cache.get_steps(k, 0, cache.n_steps) for k in cache.keys}
    feature_keys = tuple(sorted(k for k in data if k.startswith(FEAT_PREFIX)))
    train_ids, val_ids = split_episodes(cache.n_episodes, cfg.val_fraction, cfg.seed)
    p = cfg.policy
    train = WindowDataset(data, cache.episode_ends, train_ids, p.t_obs, p.t_act)
    val = WindowDataset(data, cache.episode_ends, val_ids, p.t_obs, p.t_act) if len(val_ids) else None
    if len(train) < cfg.batch_size:
        raise ValueError(f"only {len(train)} training windows ({len(train_ids)} episodes) for batch_size "
                         f"{cfg.batch_size}: record more demos or lower batch_size")
    normalizer = fit_normalizer(data, cache.episode_ends, train_ids, feature_keys, p.normalize_features)
    shape = {"feature_dims": {k: int(data[k].shape[1]) for k in feature_keys},
             "proprio_dim": int(data["proprio"].shape[1]), "action_dim": int(data["action"].shape[1])}
    expected = cache.attrs.get("feature_dim")
    bad = {k: f for k, f in shape["feature_dims"].items() if expected is not None and f != expected}
    if bad:
        raise ValueError(f"feature cache {cache_path} holds features of width {bad} but its attrs say "
                         f"{expected}: the cache is corrupt; delete it and re-run")
    return TrainData(train, val, normalizer, shape, Path(cache_path), dict(cache.attrs))


# -------------------------------------------------------------------------------------- logging
class RunLogger:
    """Rank-0 metrics: ``metrics.jsonl`` in the run dir and wandb (lazily imported; off when disabled)."""

    def __init__(self, cfg: TrainConfig, run_id: str | None, resume_step: int) -> None:
        self.path = cfg.run_dir / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # drop lines logged after the checkpoint we resume from
            lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln)["step"] <= resume_step]
            self.path.write_text("".join(f"{ln}\n" for ln in kept))
        self.run = None
        if cfg.wandb.mode != "disabled" and os.environ.get("WANDB_MODE") != "disabled":
            import wandb

            self.run = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, name=cfg.name,
                                  id=run_id, resume="allow", mode=cfg.wandb.mode, dir=str(cfg.run_dir),
                                  config=asdict(cfg))
        self.run_id = self.run.id if self.run is not None else run_id

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.run is not None:
            self.run.log(dict(metrics), step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


# ------------------------------------------------------------------------------------------ train
Evaluator = Callable[[ChunkTransformerPolicy, int], Mapping[str, float]]


@torch.no_grad()
def validation_loss(policy: ChunkTransformerPolicy, data: WindowDataset, device: torch.device,
                    batch_size: int = 256, amp: bool = False) -> float:
    """Mean per-sample loss over every window of ``data`` (deterministic, eval mode)."""
    was_training = policy.training
    policy.eval()
    total, n = 0.0, 0
    for i in range(0, len(data), batch_size):
        idx = np.arange(i, min(i + batch_size, len(data)))
        batch = {k: v.to(device) for k, v in data.get_batch(idx).items()}
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            total += policy.compute_loss(batch).item() * len(idx)
        n += len(idx)
    policy.train(was_training)
    return total / n


def _check_resume(ckpt: Mapping[str, Any], cfg: TrainConfig, fingerprint: str, shape: Mapping[str, Any],
                  path: Path) -> None:
    old = ckpt["config"]
    new = asdict(cfg)
    diff = [k for k in RESUME_KEYS if old.get(k) != new.get(k)]
    if ckpt["encoder_fingerprint"] != fingerprint:
        diff.append(f"encoder (fingerprint {ckpt['encoder_fingerprint']} → {fingerprint})")
    if dict(ckpt["policy_shape"]) != dict(shape):
        diff.append(f"data shape ({ckpt['policy_shape']} → {shape})")
    if diff:
        raise ValueError(f"{path} was trained with a different {', '.join(diff)}; to resume, use the same "
                         "config. To start this run over, pass overwrite=true (deletes its checkpoints), "
                         "or pick another name=")


def train(cfg: TrainConfig, evaluator: Evaluator | None = None) -> Path:
    """Train (or resume) the run of ``cfg``; returns the path of ``last.pt``. See the module docstring."""
    dist_info, device = init_distributed(cfg.device)
    main = dist_info.is_main
    last_path, best_path = cfg.checkpoint_dir / "last.pt", cfg.checkpoint_dir / "best.pt"
    if cfg.overwrite and main:
        for p in (last_path, best_path, cfg.run_dir / "metrics.jsonl"):
            p.unlink(missing_ok=True)
    if dist_info.world > 1:
        dist.barrier()

    cache_path, fingerprint = prepare_cache(cfg, dist_info, progress=cfg.progress and main)
    data = load_data(cfg, cache_path, fingerprint)
    n_train = len(data.train)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    policy = build_policy(cfg.policy, data.shape, data.normalizer).to(device)
    params = list(policy.parameters())
    optimizer = torch.optim.AdamW(param_groups(policy, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))
    ema = EMA(policy, cfg.ema_decay) if cfg.ema_decay > 0 else None
    step, best, run_id = 0, None, None
    if last_path.exists():
        ckpt = load_checkpoint(last_path, map_location=device)
        _check_resume(ckpt, cfg, fingerprint, data.shape, last_path)
        policy.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.state = ckpt["ema"]
        step, best, run_id = ckpt["step"], ckpt.get("best"), ckpt.get("wandb_id")
        _set_rng_state(ckpt["rng"][dist_info.rank] if isinstance(ckpt["rng"], list) else ckpt["rng"])
        if main:
            print(f"resuming {last_path} at step {step}/{cfg.steps}")
    if step >= cfg.steps:
        if main:
            print(f"{cfg.run_dir} already trained for {step} ≥ steps={cfg.steps}; raise steps= to continue")
        return last_path

    model: torch.nn.Module = policy
    if dist_info.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            policy, device_ids=[device.index] if device.type == "cuda" else None)
    amp = cfg.amp and device.type == "cuda"
    logger = RunLogger(cfg, run_id, step) if main else None
    if main:
        weights = "RANDOM (not pretrained)" if data.cache_attrs.get("weights_random") else "pretrained"
        n_eps = len(np.unique(np.searchsorted(data.train.episode_ends, data.train.index.step, side="right")))
        print(f"training {cfg.name}: {n_train} windows from {n_eps} episodes, "
              f"{sum(p.numel() for p in params) / 1e6:.2f} M params, encoder {cfg.encoder.variant} "
              f"{cfg.encoder.resolved_img_sizes()} {cfg.encoder.readout}, weights {weights}, "
              f"{dist_info.world} process(es) on {device}")

    def payload(step: int, gather: bool = True) -> dict[str, Any]:
        rng: Any = _rng_state()
        if gather and dist_info.world > 1:  # collective: every rank must call it
            gathered: list[Any] = [None] * dist_info.world
            dist.all_gather_object(gathered, rng)
            rng = gathered
        return {
            "kind": "s2robot.BCCheckpoint", "version": CHECKPOINT_VERSION, "step": step,
            "model": policy.state_dict(), "ema": ema.state if ema is not None else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
            "config": asdict(cfg), "policy_shape": data.shape, "encoder_fingerprint": fingerprint,
            "encoder": data.cache_attrs.get("encoder"), "weights_random": data.cache_attrs.get("weights_random"),
            "cache": {"path": str(data.cache_path), "source": data.cache_attrs.get("source", {}).get("fingerprint")},
            "best": best, "wandb_id": logger.run_id if logger else None,
            "torch": torch.__version__,
        }

    def eval_policy() -> ChunkTransformerPolicy:
        if ema is None:
            return policy
        shadow = build_policy(cfg.policy, data.shape, Normalizer.from_state_dict(ema.state, "normalizer."))
        shadow.load_state_dict(ema.state)
        return shadow.to(device).eval()

    policy.train()
    bar = tqdm(total=cfg.steps, initial=step, unit="step", desc=f"train {cfg.name}",
               disable=not (cfg.progress and main))
    t_log, n_log, loss_sum = time.perf_counter(), 0, 0.0
    while step < cfg.steps:
        idx = batch_indices(n_train, cfg.batch_size, step, cfg.seed, dist_info.rank, dist_info.world)
        batch = {k: v.to(device, non_blocking=True) for k, v in data.train.get_batch(idx).items()}
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            loss = policy.compute_loss(batch) if model is policy else _ddp_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            bar.close()
            kept = f"the last good checkpoint {last_path} is kept" if last_path.exists() else "no checkpoint yet"
            raise FloatingPointError(
                f"non-finite loss ({loss.item()}) or gradient norm ({grad_norm.item()}) at step {step + 1}: "
                f"training stopped and {kept}. Lower lr (now {cfg.lr}), check the demos for NaN/inf "
                "(python -m s2robot.store info DEMOS), or set amp=false")
        optimizer.step()
        scheduler.step()
        step += 1
        if ema is not None:
            ema.update(policy, step)
        loss_sum += loss.item()
        n_log += 1
        bar.update(1)
        metrics: dict[str, float] = {}
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.perf_counter() - t_log
            metrics |= {"train/loss": loss_sum / n_log, "train/lr": scheduler.get_last_lr()[0],
                        "train/grad_norm": float(grad_norm), "train/samples_per_s": n_log * cfg.batch_size / dt}
            bar.set_postfix(loss=f"{loss_sum / n_log:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            t_log, n_log, loss_sum = time.perf_counter(), 0, 0.0
        improved = False
        if main and data.val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            val = validation_loss(eval_policy(), data.val, device, amp=amp)
            metrics["val/loss"] = val
            if evaluator is None and (best is None or val < best["value"]):
                best, improved = {"metric": "val/loss", "value": val, "step": step}, True
        if main and evaluator is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            results = evaluator(eval_policy(), step)
            metrics |= {f"eval/{k}": float(v) for k, v in results.items()}
            rate = float(results["success_rate"])
            if best is None or rate > best["value"]:
                best, improved = {"metric": "eval/success_rate", "value": rate, "step": step}, True
        if main and metrics:
            logger.log(metrics, step)
        periodic = step % cfg.save_every == 0 or step == cfg.steps
        ckpt = payload(step) if periodic else None  # on every rank: gathers the ranks' RNG states
        if main and periodic:
            save_checkpoint(last_path, ckpt)
        if improved:  # main only
            save_checkpoint(best_path, ckpt if ckpt is not None else payload(step, gather=False))
    bar.close()
    if logger is not None:
        logger.finish()
    if main:
        print(f"done: {last_path}" + (f", best {best['metric']} {best['value']:.4f} at step {best['step']}: "
                                      f"{best_path}" if best else ""))
    if dist_info.world > 1:
        dist.barrier()
    return last_path


def _ddp_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The loss through the DDP wrapper's forward (so gradients are all-reduced): DDP hooks ``forward``."""
    policy: ChunkTransformerPolicy = model.module
    pred = model(batch).float()
    target = policy.normalizer.normalize("action", batch["action"])
    return policy.loss_from_prediction(pred, target, batch["action_is_pad"])
