"""Behavior-cloning training of the chunk transformer from a feature cache (``scripts/train_bc.py``).

``train(cfg)`` builds the feature cache if it is missing (``workflows.cache``), splits episodes into train/val,
fits the ``Normalizer`` on the training split, and runs AdamW with linear warmup + cosine decay, gradient
clipping, optional EMA and bf16 autocast on CUDA (``amp``). It writes to ``runs/<name>/``:

- ``checkpoints/last/`` (every ``save_every`` steps and at the end) and ``checkpoints/best/`` (best validation
  loss, or best success rate when a periodic evaluator is given): policy checkpoint folders
  (``s2robot.policy.checkpoint``) with the training state beside the weights;
- ``metrics.jsonl``: one JSON line per logged step; plus wandb (offline by default).

Re-running the same command resumes from ``last/`` and continues exactly as if never stopped: the batch at
step s is a pure function of (seed, s), and every RNG state is restored. Under ``torchrun --nproc_per_node=K``
it trains with DDP (NCCL on GPUs, gloo on CPU): each rank takes its shard of the same global batch; only
rank 0 logs, validates and saves. The run's config and what a resume must agree on are
``workflows.train_config``'s.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from s2robot.common.device import autocast_dtype
from s2robot.common.distributed import barrier, gather_rng_state, init_distributed, rng_state, set_rng_state
from s2robot.common.lock import writer_lock
from s2robot.common.optim import EMA, lr_factor, param_groups
from s2robot.common.runlog import RunLogger
from s2robot.data.dataset import WindowDataset, batch_indices
from s2robot.data.importer import sim_env_problem
from s2robot.data.normalize import Normalizer
from s2robot.data.training_set import load_training_data
from s2robot.data.views import draw_views
from s2robot.policy.checkpoint import (
    build_policy,
    load_training_state,
    read_parts,
    recover,
    remove_checkpoint,
    save_pretrained,
)
from s2robot.policy.modeling import ChunkTransformerPolicy
from s2robot.workflows.cache import prepare_cache, prepare_views
from s2robot.workflows.train_config import TrainConfig, cache_rebuilt, execution_unsaved, resume_problems

Evaluator = Callable[[ChunkTransformerPolicy, int], Mapping[str, float]]


@torch.no_grad()
def validation_loss(policy: ChunkTransformerPolicy, data: WindowDataset, device: torch.device,
                    batch_size: int = 256, amp: torch.dtype | None = None) -> float:
    """Mean per-sample loss over every window of ``data`` (deterministic, eval mode)."""
    was_training = policy.training
    policy.eval()
    total, n = 0.0, 0
    for i in range(0, len(data), batch_size):
        idx = np.arange(i, min(i + batch_size, len(data)))
        batch = {k: v.to(device) for k, v in data.get_batch(idx).items()}
        with torch.autocast(device.type, amp or torch.bfloat16, enabled=amp is not None):
            total += policy.compute_loss(batch).item() * len(idx)
        n += len(idx)
    policy.train(was_training)
    return total / n


class Trainer:
    """One BC run: set-up (cache, data, model, optimizer, resume) in ``__init__``, the loop in ``run``."""

    def __init__(self, cfg: TrainConfig, evaluator: Evaluator | None = None) -> None:
        self.cfg, self.evaluator = cfg, evaluator
        self.dist, self.device = init_distributed(cfg.device)
        self.main = self.dist.is_main
        self.last, self.best_dir = cfg.checkpoint_dir / "last", cfg.checkpoint_dir / "best"
        cache_path, self.fingerprint = prepare_cache(cfg.demos, cfg.cache, cfg.encoder, cfg.cache_batch_size,
                                                     self.dist, progress=cfg.progress and self.main)
        views_path = prepare_views(cfg.demos, cache_path, cfg.encoder, cfg.views, cfg.cache_batch_size, self.dist,
                                   progress=cfg.progress and self.main)
        p = cfg.policy
        self.data = load_training_data(cache_path, self.fingerprint, p.t_obs, p.t_act, p.normalize_features,
                                       cfg.val_fraction, cfg.seed, cfg.batch_size, p.action_space, views_path,
                                       cfg.views)
        if self.evaluator is not None and (problem := sim_env_problem(self.data.cache_attrs)):
            raise ValueError(f"this run cannot be evaluated in simulation while it trains: {problem}. Train it with "
                             "eval_every=0 (scripts/train_bc.py), not through the pipeline")
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.policy = build_policy(cfg.policy, self.data.shape, self.data.normalizer).to(self.device)
        self.optimizer = torch.optim.AdamW(param_groups(self.policy, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))
        self.ema = EMA(self.policy, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.step, self.best, self.run_id, self.logger = 0, None, None, None
        if cfg.overwrite:
            self._start_over()  # only now that the new inputs have loaded: a typo in demos= deletes nothing
        else:
            self._resume()
        self.amp = autocast_dtype(cfg.amp, self.device, cpu_auto=False)

    def _start_over(self) -> None:
        """``overwrite=true``: delete the run's checkpoints (refusing a folder that holds anything else) and
        metrics."""
        if self.main:
            for d in (self.last, self.best_dir):
                remove_checkpoint(d)
            (self.cfg.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        barrier(self.dist)

    def _resume(self) -> None:
        if self.main:
            for d in (self.last, self.best_dir):
                for note in recover(d):
                    print(note)
        barrier(self.dist)
        legacy = self.cfg.checkpoint_dir / "last.pt"
        if legacy.is_file() and not self.last.exists():
            read_parts(legacy)  # refuses, with the command that converts it
        if not self.last.exists():
            return
        parts, state = read_parts(self.last), load_training_state(self.last, map_location=self.device)
        diff = resume_problems(state, parts, self.cfg, self.fingerprint, self.data)
        if diff:
            raise ValueError(f"{self.last} was trained with a different {', '.join(diff)}; to resume, use the same "
                             "config. To start this run over, pass overwrite=true (deletes its checkpoints), "
                             "or pick another name=")
        if self.main and (note := cache_rebuilt(parts, self.data)):
            print(note)
        self.policy.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.state = state["ema"]
        self.step, self.best, self.run_id = state["step"], state.get("best"), state.get("wandb_id")
        set_rng_state(state["rng"][self.dist.rank] if isinstance(state["rng"], list) else state["rng"])
        if self.main:
            print(f"resuming {self.last} at step {self.step}/{self.cfg.steps}")

    # ------------------------------------------------------------------------------------ checkpoints
    def _parts(self) -> dict[str, dict[str, Any]]:
        cfg, attrs = self.cfg, self.data.cache_attrs
        trained_on = attrs.get("source", {}).get("fingerprint")
        run = {k: v for k, v in asdict(cfg).items() if k not in ("encoder", "policy", "env")}
        config = {"policy": asdict(cfg.policy), "shape": self.data.shape, "step": self.step,
                  "ema": self.ema is not None, "run": run, "encoder_fingerprint": self.fingerprint,
                  "weights_random": attrs.get("weights_random"), "torch": torch.__version__,
                  "cache": {"path": str(self.data.cache_path), "source": trained_on,
                            "fingerprint": self.data.cache_fingerprint},  # what a resume must find again
                  "sim_env_problem": sim_env_problem(attrs),  # set for imported demos: evaluation refuses
                  "demo_cubes": self.data.train_cube_xy,  # for evaluation's distance to the nearest training cube
                  "demos": {"path": attrs.get("source", {}).get("path", cfg.demos), "fingerprint": trained_on,
                            "episodes": attrs.get("source", {}).get("n_episodes"),
                            "steps": int(self.data.train.episode_ends[-1])}}  # for the model card
        encoder = {"config": asdict(cfg.encoder), "fingerprint": self.fingerprint, "describe": attrs.get("encoder")}
        return {"config": config, "encoder": encoder, "env": asdict(cfg.env)}

    def _training_state(self, rng: Any) -> dict[str, Any]:
        return {"model": self.policy.state_dict(), "ema": self.ema.state if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "rng": rng,
                "step": self.step, "best": self.best, "wandb_id": self.logger.run_id if self.logger else None,
                "train_config": asdict(self.cfg)}

    def _save(self, directory: Path, rng: Any) -> None:
        weights = self.ema.state if self.ema is not None else self.policy.state_dict()
        save_pretrained(directory, weights, self.policy.normalizer, self._parts(), self._training_state(rng))

    def _eval_policy(self) -> ChunkTransformerPolicy:
        if self.ema is None:
            return self.policy
        normalizer = Normalizer.from_state_dict(self.ema.state, "normalizer.")
        shadow = build_policy(self.cfg.policy, self.data.shape, normalizer)
        shadow.load_state_dict(self.ema.state)
        return shadow.to(self.device).eval()

    # ------------------------------------------------------------------------------------------ loop
    def _announce(self) -> None:
        cfg, data = self.cfg, self.data
        weights = "RANDOM (not pretrained)" if data.cache_attrs.get("weights_random") else "pretrained"
        encoder = (f"{cfg.encoder.variant} {cfg.encoder.resolved_img_sizes()} {cfg.encoder.readout}, weights {weights}"
                   if not data.cache_attrs.get("privileged") else data.cache_attrs["encoder"]["weights"])
        n_eps = len(np.unique(np.searchsorted(data.train.episode_ends, data.train.index.step, side="right")))
        print(f"training {cfg.name}: {len(data.train)} windows from {n_eps} episodes, "
              f"{sum(p.numel() for p in self.policy.parameters()) / 1e6:.2f} M params, encoder {encoder}, "
              f"{self.dist.world} process(es) on {self.device}")

    def _train_step(self, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        idx = batch_indices(len(self.data.train), cfg.batch_size, self.step, cfg.seed, self.dist.rank, self.dist.world)
        view = (draw_views(cfg.views, cfg.batch_size, self.step, cfg.seed, self.dist.rank, self.dist.world)
                if cfg.views.n else None)  # (B,) which shifted view each sample reads, -1: none
        batch = {k: v.to(self.device, non_blocking=True) for k, v in self.data.train.get_batch(idx, view).items()}
        with torch.autocast(self.device.type, self.amp or torch.bfloat16, enabled=self.amp is not None):
            loss = self.policy.compute_loss(batch) if model is self.policy else _ddp_loss(model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            kept = f"the last good checkpoint {self.last} is kept" if self.last.exists() else "no checkpoint yet"
            raise FloatingPointError(
                f"non-finite loss ({loss.item()}) or gradient norm ({grad_norm.item()}) at step {self.step + 1}: "
                f"training stopped and {kept}. Lower lr (now {cfg.lr}), check the demos for NaN/inf "
                "(python -m s2robot.workflows.store info DEMOS), or set amp=none")
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.policy, self.step)
        return loss, grad_norm

    def _validate_and_evaluate(self, end: bool) -> tuple[dict[str, float], bool]:
        """Validation loss and periodic success (rank 0), and whether ``best`` improved."""
        cfg, step, metrics, improved = self.cfg, self.step, {}, False
        if self.data.val is not None and (step % cfg.val_every == 0 or end):
            val = validation_loss(self._eval_policy(), self.data.val, self.device, amp=self.amp)
            metrics["val/loss"] = val
            if self.evaluator is None and (self.best is None or val < self.best["value"]):
                self.best, improved = {"metric": "val/loss", "value": val, "step": step}, True
        if self.evaluator is not None and cfg.eval_every and (step % cfg.eval_every == 0 or end):
            results = self.evaluator(self._eval_policy(), step)
            metrics |= {f"eval/{k}": float(v) for k, v in results.items()}
            rate = float(results["success_rate"])
            if self.best is None or rate > self.best["value"]:
                self.best, improved = {"metric": "eval/success_rate", "value": rate, "step": step}, True
        return metrics, improved

    def run(self) -> Path:
        cfg, main = self.cfg, self.main
        if self.step >= cfg.steps:
            if main:
                print(f"{cfg.run_dir} already trained for {self.step} ≥ steps={cfg.steps}; raise steps= to continue")
                if note := execution_unsaved(read_parts(self.last), cfg.policy):
                    print(note)
            return self.last
        model: torch.nn.Module = self.policy
        if dist.is_initialized():  # under torchrun, also with one process (a smoke test of NCCL)
            model = torch.nn.parallel.DistributedDataParallel(
                self.policy, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.logger = RunLogger(cfg.run_dir / "metrics.jsonl", cfg.wandb, cfg.name, asdict(cfg), self.run_id,
                                resume_step=self.step) if main else None
        if main:
            self._announce()
        self.policy.train()
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", desc=f"train {cfg.name}",
                   disable=not (cfg.progress and main))
        t_log, n_log, loss_sum = time.perf_counter(), 0, 0.0
        try:
            while self.step < cfg.steps:
                loss, grad_norm = self._train_step(model)
                loss_sum += loss.item()
                n_log += 1
                bar.update(1)
                end, metrics = self.step == cfg.steps, {}
                if self.step % cfg.log_every == 0 or end:
                    dt, lr = time.perf_counter() - t_log, self.scheduler.get_last_lr()[0]
                    metrics |= {"train/loss": loss_sum / n_log, "train/lr": lr, "train/grad_norm": float(grad_norm),
                                "train/samples_per_s": n_log * cfg.batch_size / dt}
                    bar.set_postfix(loss=f"{loss_sum / n_log:.4f}", lr=f"{lr:.2e}")
                    t_log, n_log, loss_sum = time.perf_counter(), 0, 0.0
                self._after_step(metrics, end)
        finally:
            bar.close()
        return self._finish()

    def _after_step(self, metrics: dict[str, float], end: bool) -> None:
        """Validate, evaluate, log and save after a step."""
        improved = False
        if self.main:
            more, improved = self._validate_and_evaluate(end)
            metrics |= more
            if metrics:
                self.logger.log(metrics, self.step)
        periodic = self.step % self.cfg.save_every == 0 or end
        rng = gather_rng_state(self.dist) if periodic else None  # a collective: on every rank
        if self.main and periodic:
            self._save(self.last, rng)
        if improved:  # main only
            self._save(self.best_dir, rng if rng is not None else rng_state())

    def _finish(self) -> Path:
        if self.logger is not None:
            self.logger.finish()
        if self.main:
            best = self.best
            print(f"done: {self.last}" + (f", best {best['metric']} {best['value']:.4f} at step {best['step']}: "
                                          f"{self.best_dir}" if best else ""))
        barrier(self.dist)
        return self.last


def train(cfg: TrainConfig, evaluator: Evaluator | None = None) -> Path:
    """Train (or resume) the run of ``cfg``; returns its ``last/`` checkpoint folder. See the module docstring.

    The run folder is locked for the writer (rank 0) while it trains: a second ``train_bc.py`` of the same run is
    refused with the first one's pid and host instead of interleaving checkpoints.
    """
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with writer_lock(cfg.run_dir, "run") if rank0 else contextlib.nullcontext():
        return Trainer(cfg, evaluator).run()


def _ddp_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The loss through the DDP wrapper's forward (so gradients are all-reduced): DDP hooks ``forward``."""
    policy: ChunkTransformerPolicy = model.module
    pred = model(batch).float()
    target = policy.normalizer.normalize("action", batch["action"])
    return policy.loss_from_prediction(pred, target, batch["action_is_pad"])
