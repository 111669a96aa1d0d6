"""Invariance distillation (``scripts/distill_invariance.py``): a frozen encoder that sees through scene changes.

A policy trained on frozen features is as robust as the features are steady: if the lights dim or the table turns
green and every token moves, the policy's inputs leave everything it was trained on. Here a *student* ViT, started
from the *teacher* (a frozen in-domain encoder), learns to give, for a frame rendered in a varied scene, the tokens
the teacher gives for the same state rendered in the scene as built: ``MSE(student(varied), teacher(clean))`` over
every output token (CLS and patches, after the final norm: what S² and the readout use), plus the same on clean
frames (a quarter of each batch) so that the scene as built keeps its features. The generator renders each episode
in both scenes (``sim.frames.paired_frames``); a pair is cropped and S²-tiled alike, so each tile is matched with
its own clean tile. The teacher never changes, so nothing collapses, and a policy trained on either encoder's
clean features reads the student's features of a varied scene as the clean scene's.

The student is exported like a pretrained encoder (``weights/<export_name>.pth`` and its provenance JSON).
"""

from __future__ import annotations

import datetime
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from s2robot.common.checks import check_seed
from s2robot.common.device import resolve_device
from s2robot.common.lock import writer_lock
from s2robot.common.optim import lr_factor, param_groups, save_checkpoint
from s2robot.common.runlog import RunLogger, WandbConfig
from s2robot.policy.checkpoint import load_tensors
from s2robot.sim.frames import FrameDataConfig, GeneratorConfig, paired_frames
from s2robot.vision.augment import random_resized_crop, s2_tiles
from s2robot.vision.image import imagenet_normalize, to_float
from s2robot.vision.vit import VisionTransformer, build_vit, get_config
from s2robot.vision.weights import load_resolved, resolve_weights
from s2robot.workflows.export import check_export_target, describe_data, export_encoder


def _paired_data() -> FrameDataConfig:
    return FrameDataConfig(generator=GeneratorConfig(n_frames=8000, variation="standard_visual"))


@dataclass
class DistillConfig:
    """``scripts/distill_invariance.py``. Hydra: ``configs/distill_invariance.yaml``.

    teacher: registry variant of the frozen teacher, with weights that resolve by name (e.g. a shipped in-domain
        encoder); the student starts as a copy
    data: paired frames: the generator in varied scenes (``data.generator.variation``: a visual variation) and the
        same episodes as built
    s2_img_sizes: scale sides [px] whose tiles the pairs are cut into (``vision.augment.s2_tiles``), as S² feeds the
        encoder; empty: whole frames (they must then be the model's size)
    clean_share: share of each batch whose input is the clean frame itself (keeps the scene as built as it was)
    steps, batch_size, lr, min_lr, warmup_steps, weight_decay: AdamW with warmup and cosine decay
    crop_scale, crop_ratio: random resized crop of each pair (the same crop for both frames)
    threads: torch CPU threads; None = torch's default
    export_name: registry name of the student (``s2robot.vision.vit.VARIANTS``); None = no export
    export_overwrite: let the export replace an existing ``<export_dir>/<export_name>.pth``/``.json``; a checkpoint that
        ships with the repository is never replaced (``export.check_export_target``)
    """

    teacher: str = "vitti-112-s2mae-cubepick"
    data: FrameDataConfig = field(default_factory=_paired_data)
    s2_img_sizes: list[int] = field(default_factory=lambda: [112, 224])
    clean_share: float = 0.25
    name: str = "vitti-112-invariant"
    seed: int = 0
    steps: int = 1200
    batch_size: int = 64
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_steps: int = 50
    weight_decay: float = 0.05
    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    device: str = "auto"
    threads: int | None = None
    log_every: int = 10
    ckpt_every: int = 100
    export_name: str | None = "vitti-112-invariant-cubepick"
    export_dir: str = "weights"
    export_fp16: bool = True
    export_overwrite: bool = False
    wandb: WandbConfig = field(default_factory=WandbConfig)
    runs_dir: str = "runs"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.warmup_steps < 0 or not self.lr > 0:
            raise ValueError(f"need steps ≥ 1, batch_size ≥ 1, warmup_steps ≥ 0, lr > 0; got {self.steps}, "
                             f"{self.batch_size}, {self.warmup_steps}, {self.lr}")
        if not 0.0 <= self.clean_share < 1.0:
            raise ValueError(f"clean_share must be in [0, 1), got {self.clean_share}")
        check_seed(self.seed)
        vit = get_config(self.teacher)  # raises with the list of variants
        if any(s < vit.img_size or s % vit.img_size for s in self.s2_img_sizes):
            raise ValueError(f"s2_img_sizes must be multiples of {self.teacher}'s {vit.img_size} px; got "
                             f"{list(self.s2_img_sizes)}")
        if self.export_name is not None and get_config(self.export_name) != vit:
            raise ValueError(f"export_name {self.export_name!r} is registered with another architecture than the "
                             f"teacher {self.teacher!r}; register it in s2robot/vision/vit.py")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def export_path(self) -> Path | None:
        """``<export_dir>/<export_name>.pth``; None without an export."""
        return None if self.export_name is None else Path(self.export_dir) / f"{self.export_name}.pth"


def load_teacher(variant: str, device: torch.device) -> tuple[VisionTransformer, str]:
    """The frozen teacher (eval mode, no grad) and its weights' digest."""
    resolved = resolve_weights(variant)
    model = build_vit(variant)
    load_resolved(model, resolved)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval(), resolved.digest


def invariance_loss(student: VisionTransformer, teacher: VisionTransformer, inputs: torch.Tensor,
                    clean: torch.Tensor) -> torch.Tensor:
    """MSE between the student's tokens of ``inputs`` and the teacher's of ``clean`` (both normalized (B, 3, S, S)),
    averaged over tokens and channels."""
    with torch.no_grad():
        target = teacher(clean)  # (B, 1+N, D)
    return F.mse_loss(student(inputs), target)


def make_batch(varied: torch.Tensor, clean: torch.Tensor, cfg: DistillConfig, gen: torch.Generator,
               img_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of (input, clean target) images, normalized (B, 3, T, T): pairs drawn from the frames, a
    ``clean_share`` of inputs replaced by their clean frame, each pair tiled and cropped alike."""
    idx = torch.randint(len(varied), (cfg.batch_size,), generator=gen)
    keep_clean = torch.rand(cfg.batch_size, generator=gen) < cfg.clean_share
    x = torch.cat([to_float(varied[idx], device), to_float(clean[idx], device)], dim=1)  # (B, 6, S, S)
    x[keep_clean.to(device), :3] = x[keep_clean.to(device), 3:]
    if cfg.s2_img_sizes:
        x = s2_tiles(x, cfg.s2_img_sizes, gen, img_size)
    x = random_resized_crop(x, cfg.crop_scale, cfg.crop_ratio, False, gen)
    return imagenet_normalize(x[:, :3]), imagenet_normalize(x[:, 3:])


def distill(cfg: DistillConfig, frames: tuple[Any, Any] | None = None, progress: bool = True,
            command: str | None = None, stop_at: int | None = None) -> dict[str, Any]:
    """``_distill`` holding the run folder's writer lock: a second distillation of the same run is refused with the
    first one's pid and host instead of interleaving checkpoints."""
    with writer_lock(cfg.run_dir, "run"):
        return _distill(cfg, frames, progress, command, stop_at)


def _distill(cfg: DistillConfig, frames: tuple[Any, Any] | None = None, progress: bool = True,
             command: str | None = None, stop_at: int | None = None) -> dict[str, Any]:
    """Train (or resume, from ``runs/<name>/last.pt``) the student; export it when asked. ``frames``: (varied,
    clean) uint8 (T, S, S, 3) pairs, default ``paired_frames(cfg.data)``. stop_at: stop at this step after a
    checkpoint, as an interrupted run would (no export). Returns steps, losses and the export. An export that would
    replace a file is refused before any training."""
    # 1. setup: the export's target, device, frames, teacher and student
    if cfg.export_path is not None:
        check_export_target(cfg.export_path, cfg.export_overwrite)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    varied, clean = paired_frames(cfg.data, progress) if frames is None else frames
    varied, clean = torch.from_numpy(varied), torch.from_numpy(clean)
    teacher, teacher_digest = load_teacher(cfg.teacher, device)
    student = build_vit(cfg.teacher).to(device)
    student.load_state_dict(teacher.state_dict())
    optimizer = torch.optim.AdamW(param_groups(student, cfg.weight_decay), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr))
    gen = torch.Generator().manual_seed(cfg.seed)
    step, history, path = 0, [], cfg.run_dir / "last.pt"
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    if path.is_file():  # resume exactly: weights, optimizer, schedule, RNG
        step, history = _resume(path, cfg, teacher_digest, student, optimizer, schedule, gen, progress)
    logger = RunLogger(cfg.run_dir / "log.jsonl", cfg.wandb, cfg.name, asdict(cfg))

    # 2. train
    student.train()
    bar = tqdm(total=cfg.steps, initial=step, unit="step", desc=f"distill {cfg.name}", disable=not progress)
    t0, seen = time.perf_counter(), 0
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    while step < end:
        inputs, targets = make_batch(varied, clean, cfg, gen, student.cfg.img_size, device)
        loss = invariance_loss(student, teacher, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        step, seen = step + 1, seen + cfg.batch_size
        history.append(loss.item())
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{history[-1]:.4f}", img_s=f"{rate:.1f}")
            logger.log({"loss": history[-1], "lr": optimizer.param_groups[0]["lr"], "img_per_s": rate}, step)
        if step % cfg.ckpt_every == 0 or step == end:
            save_checkpoint(path, {"student": student.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": schedule.state_dict(), "generator": gen.get_state(), "step": step,
                                   "history": history, "teacher_digest": teacher_digest})
    bar.close()
    logger.finish()

    # 3. export the student in MVP's format, with where it came from
    export = None
    if cfg.export_name is not None and step >= cfg.steps:
        export = _export(cfg, student, teacher_digest, len(varied), step, history, command, progress)
    return {"run_dir": cfg.run_dir, "step": step, "history": history, "export": export}


def _resume(path: Path, cfg: DistillConfig, teacher_digest: str, student: VisionTransformer,
            optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator,
            progress: bool) -> tuple[int, list[float]]:
    """Load the run's ``last.pt`` into the student, optimizer, schedule and generator; returns (step, loss history).
    Refuses a checkpoint distilled from other teacher weights."""
    ckpt = load_tensors(path)
    if ckpt["teacher_digest"] != teacher_digest:
        raise ValueError(f"{path} distilled another teacher's weights ({ckpt['teacher_digest'][:12]}, now "
                         f"{teacher_digest[:12]}); pick another name= or delete {cfg.run_dir}")
    student.load_state_dict(ckpt["student"])
    optimizer.load_state_dict(ckpt["optimizer"])
    schedule.load_state_dict(ckpt["scheduler"])
    gen.set_state(ckpt["generator"])
    step, history = ckpt["step"], list(ckpt["history"])
    if progress:
        print(f"resuming {path} at step {step}/{cfg.steps}")
    return step, history


def _export(cfg: DistillConfig, student: VisionTransformer, teacher_digest: str, n_frames: int, step: int,
            history: list[float], command: str | None, progress: bool) -> Path:
    """Export the student at ``cfg.export_path`` with its provenance (teacher, data, steps, losses, command)."""
    tail = history[-50:]
    provenance = {
        "name": cfg.export_name, "variant": cfg.teacher,
        "method": f"invariance distillation from {cfg.teacher} (sha256 {teacher_digest[:12]}): the student's "
                  f"tokens of frames varied by {cfg.data.generator.variation!r} regress the teacher's tokens of "
                  "the same states rendered as built",
        "teacher": cfg.teacher, "teacher_sha256": teacher_digest, "clean_share": cfg.clean_share,
        "data": {**describe_data(cfg.data, n_frames, cfg.crop_scale, cfg.crop_ratio, False, cfg.s2_img_sizes),
                 "clean_generator_key": replace(cfg.data.generator, variation="none").key()},
        "steps": step, "batch_size": cfg.batch_size,
        "images_seen": step * cfg.batch_size, "lr": cfg.lr, "final_loss": sum(tail) / max(1, len(tail)),
        "first_loss": history[0] if history else None, "seed": cfg.seed, "command": command,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    export, _ = export_encoder(state, cfg.export_path, cfg.export_fp16, provenance, cfg.export_overwrite)
    if progress:
        print(f"exported {export} ({export.stat().st_size / 1e6:.1f} MB)")
    return export
