"""The BC training run's config (``TrainConfig``) and what a checkpoint must agree on with it to be resumed.

``resume_problems`` lists every setting a resumed run would silently not apply (``RESUME_KEYS``, the encoder, the data
shape, the demo store); ``workflows.train`` refuses the resume with them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from s2robot.common.checks import check_seed
from s2robot.common.device import DTYPE_CHOICES
from s2robot.common.runlog import WandbConfig
from s2robot.data.training_set import TrainData
from s2robot.data.views import ViewsConfig
from s2robot.policy.configuration import EXECUTION_FIELDS, PolicyConfig
from s2robot.sim.env import EnvConfig
from s2robot.vision.encoder import EncoderConfig

# What a checkpoint must agree on with the config to resume from it. The optimizer's lr and weight decay live in
# its saved state, so a changed value would be recorded but never applied: refused.
# The rest may change and takes effect for real: steps (the schedule is recomputed), grad_clip, amp, eval/val cadence,
# and the policy's EXECUTION_FIELDS (later checkpoints carry the new ones).
RESUME_KEYS = ("policy", "seed", "batch_size", "val_fraction", "lr", "weight_decay", "warmup_steps", "ema_decay",
               "views")


@dataclass
class TrainConfig:
    """``scripts/train_bc.py`` (``configs/train_bc.yaml``, composing the ``encoder``, ``policy``, ``env`` groups).

    name: run name; everything goes to ``<runs_dir>/<name>/``
    demos / cache: demo store, and its feature cache (default path from the encoder fingerprint; built
        when missing)
    views: shifted views of every demo frame, encoded once beside the cache; training windows read them with
        ``views.prob`` (augmentation, ``s2robot.data.views``; ``views.n=0``, the default: none)
    steps, batch_size (global, split over DDP ranks), lr, weight_decay, warmup_steps, grad_clip
    ema_decay: 0 disables the EMA; else the EMA weights are what evaluation and ``best/`` use
    val_fraction / val_every: held-out episodes and how often their loss is computed [steps]
    eval_every: periodic rollout evaluation [steps] (0: off), through the evaluator given to ``train``
    amp: autocast dtype: ``auto`` (bf16 on CUDA; on CPUs the policy trains in float32), ``bfloat16``, ``none``
    overwrite: start over, deleting the run's checkpoints once the new inputs have loaded (by default a re-run
        resumes; a resume on other demos than the run was trained on is refused)
    """

    name: str = "cube_pick"
    runs_dir: str = "runs"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
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
    amp: str = "auto"
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "cache_batch_size", "val_every", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        check_seed(self.seed)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name, ok, want in [("lr", self.lr > 0, "> 0"), ("grad_clip", self.grad_clip > 0, "> 0"),
                               ("weight_decay", self.weight_decay >= 0, "≥ 0"),
                               ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)")]:
            if not (ok and math.isfinite(getattr(self, name))):  # NaN fails every comparison: refused too
                raise ValueError(f"{name} must be finite and {want}, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.eval_every < 0:
            raise ValueError(f"need warmup_steps ≥ 0 and eval_every ≥ 0, got {self.warmup_steps}, {self.eval_every}")
        if self.eval_every and self.env.one_robot:
            raise ValueError(f"eval_every={self.eval_every} would move the robot at {self.env.options['host']} while "
                             "training runs unattended: set eval_every=0 and evaluate on the arm with scripts/eval.py")
        if self.amp not in (*DTYPE_CHOICES, "none"):
            raise ValueError(f"amp must be one of {[*DTYPE_CHOICES, 'none']}, got {self.amp!r}")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def config_from_dict(d: Mapping[str, Any]) -> TrainConfig:
    """A ``TrainConfig`` from ``asdict`` output (e.g. a checkpoint's run config); unknown keys are errors."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), dict(d)))


def resume_problems(state: Mapping[str, Any], parts: Mapping[str, Any], cfg: TrainConfig, fingerprint: str,
                     data: TrainData) -> list[str]:
    """What the checkpoint (its training ``state`` and ``parts``) was trained with that differs from ``cfg``, the
    encoder ``fingerprint`` and the ``data`` now: one entry per difference, empty when it may resume."""
    old, new = dict(state["train_config"]), asdict(cfg)
    for d in (old, new):  # no views (runs from before views have no key): n=0, whatever the other settings; views
        # saved before scene stores existed read their own frames (scenes None)
        d["views"] = {"scenes": None, **d["views"]} if d.get("views", {"n": 0})["n"] else {"n": 0}
        d["policy"] = {k: v for k, v in d["policy"].items() if k not in EXECUTION_FIELDS}  # training never reads
    diff = [k if k == "policy" else f"{k} ({old.get(k)} → {new.get(k)})" for k in RESUME_KEYS
            if old.get(k) != new.get(k)]
    found = parts["config"]["encoder_fingerprint"]
    if found != fingerprint:
        diff.append(f"encoder (fingerprint {found} → {fingerprint})")
    if dict(parts["config"]["shape"]) != dict(data.shape):
        diff.append(f"data shape ({parts['config']['shape']} → {data.shape})")
    trained_on = (parts["config"].get("cache") or {}).get("source")  # the demo store's fingerprint
    now = data.cache_attrs.get("source", {}).get("fingerprint")
    if trained_on is not None and trained_on != now:
        diff.append(f"demo store (fingerprint {trained_on} → {now}: {cfg.demos} holds other episodes than the demos "
                    "this run was trained on)")
    return diff


def cache_rebuilt(parts: Mapping[str, Any], data: TrainData) -> str | None:
    """A note when the run's cache of the same demos and encoder holds other bytes than when it was saved (rebuilt,
    e.g. on another device: float16 features may round differently); None when it is the same or not recorded."""
    was = (parts["config"].get("cache") or {}).get("fingerprint")
    if was is None or was == data.cache_fingerprint:
        return None
    return (f"note: feature cache {data.cache_path} was rebuilt since {parts['config']['step']} steps were trained "
            f"(fingerprint {was} → {data.cache_fingerprint}; same demos and encoder): the resume reads its features")


def execution_unsaved(parts: Mapping[str, Any], policy: PolicyConfig) -> str | None:
    """A note when ``policy`` executes its chunks otherwise than the finished checkpoint (``parts``) records: training
    never reads these fields, so only more training steps save them, and evaluations run the checkpoint's unless
    ``executing`` says otherwise; None when they agree."""
    saved = {k: parts["config"]["policy"].get(k) for k in EXECUTION_FIELDS}
    wanted = {k: getattr(policy, k) for k in EXECUTION_FIELDS}
    if saved == wanted:
        return None
    given = " ".join(f"executing.{k}={v}" for k, v in wanted.items() if v != saved[k])
    return (f"note: this finished run's checkpoint executes {saved}, not policy's {wanted}: evaluations run the "
            f"checkpoint's; to evaluate the other, pass {given} (scripts/eval.py; eval.executing.… in make run)")
