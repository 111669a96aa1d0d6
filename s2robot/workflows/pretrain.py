"""MAE pretraining on in-domain frames (``scripts/pretrain_mae.py``) and the export of its encoder.

``pretrain_mae(cfg)`` trains a ``s2robot.vision.mae.MaskedAutoencoder`` on frames from demo stores and/or the
rendered-scene generator (``s2robot.sim.frames``) with MAE's augmentation (random resized crops, no flips),
AdamW with warmup + cosine, bf16 autocast on GPU, exact resume, reconstruction PNGs every N steps and
wandb. With ``s2_img_sizes`` it pretrains with S² (the S² paper's pretraining at several scales): each image is
one of the tiles S² will feed the frozen encoder, so the model learns the zoomed-in views it sees at 448².
The crops and S² tiles are ``vision.augment``'s. ``workflows.export`` writes the encoder as an MVP-format checkpoint
(``{"model": state dict}``, timm key names) with a JSON of provenance, which ``s2robot.vision.weights`` loads like an
official MVP file. An export replaces no existing file unless asked (``export_overwrite``) and never a checkpoint
that ships with the repository. A run holds the writer lock of its folder while it trains, so a second
``pretrain_mae.py`` of the same run is refused.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imageio.v3 as imageio
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from tqdm import tqdm

from s2robot.common.checks import check_seed
from s2robot.common.device import DTYPE_CHOICES, autocast_dtype, resolve_device
from s2robot.common.lock import writer_lock
from s2robot.common.optim import lr_factor, param_groups, save_checkpoint
from s2robot.common.runlog import RunLogger, WandbConfig
from s2robot.policy.checkpoint import load_tensors
from s2robot.sim.frames import FrameDataConfig, load_frames, paired_frames
from s2robot.vision.augment import random_resized_crop, s2_tiles
from s2robot.vision.image import imagenet_normalize, to_float
from s2robot.vision.mae import MAEConfig, MaskedAutoencoder
from s2robot.vision.vit import get_config
from s2robot.workflows.export import check_export_target, describe_data, export_encoder

TARGETS = ("input", "clean")


@dataclass
class PretrainConfig:
    """``scripts/pretrain_mae.py``: MAE pretraining on in-domain frames. Hydra: ``configs/pretrain_mae.yaml``.

    name: run name; checkpoints, logs and reconstructions go to ``runs/<name>/``
    steps, batch_size: optimizer steps and images per step
    lr, min_lr: peak and final learning rate (AdamW; linear warmup for ``warmup_steps``, then cosine)
    weight_decay, betas: AdamW's (MAE: 0.05, (0.9, 0.95)); no decay on biases, norms and tokens
    crop_scale, crop_ratio: random-resized-crop area share and aspect-ratio ranges (MAE: (0.2, 1), (3/4, 4/3))
    hflip: random horizontal flips (MAE: on; off by default here: left and right matter to a robot)
    s2_img_sizes: MAE with S²: image sides [px], each a multiple of the model's, e.g. ``[224, 448]``; every image
        is then one tile of one scale (``s2_tiles``), before the crop. Empty: the plain MVP recipe
    target: what the decoder reconstructs: ``input`` (MAE: the image itself) or ``clean`` (the same state rendered
        in the scene as built, ``sim.frames.paired_frames``: the generator renders every episode in its varied
        scenes (``data.generator.variation``, a visual one) and as built; half the images are varied, half clean,
        and every patch of the clean rendering is the target. The encoder learns to see through lights, colours,
        camera shifts and distractors to what a policy needs, and a frozen policy input stays put under them)
    device: ``auto`` (CUDA when present), ``cpu``, ``cuda``
    amp: autocast dtype: ``auto`` (bf16 on CUDA and on CPUs with native bf16, else none), ``bfloat16``, ``none``
    threads: torch CPU threads; None = torch's default
    log_every, ckpt_every, recon_every: steps between log lines, checkpoints (``last.pt``) and
        reconstruction PNGs (``recon/step_<N>.png``: original / masked / reconstruction / with visible)
    export_name: registry name to export the encoder under (e.g. ``vitti-mae-cubepick``); None = no export
    export_dir: where ``<export_name>.pth`` and ``.json`` go (``weights/`` ships with the repository)
    export_overwrite: let the export replace an existing ``<export_name>.pth``/``.json`` in ``export_dir``; a
        checkpoint that ships with the repository (``s2robot.vision.weights.shipped_weights``) is never replaced
    export_fp16: store the exported weights in float16 (half the size; loads into float32 models)
    wandb: wandb logging (``wandb.mode``: ``offline`` by default, ``online`` or ``disabled``)
    """

    model: MAEConfig = field(default_factory=MAEConfig)
    data: FrameDataConfig = field(default_factory=FrameDataConfig)
    name: str = "vitti-mae-cubepick"
    seed: int = 0
    steps: int = 1200
    batch_size: int = 64
    lr: float = 5e-4
    min_lr: float = 1e-5
    warmup_steps: int = 60
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    hflip: bool = False
    s2_img_sizes: list[int] = field(default_factory=list)
    target: str = "input"
    device: str = "auto"
    amp: str = "auto"
    threads: int | None = None
    log_every: int = 10
    ckpt_every: int = 100
    recon_every: int = 250
    export_name: str | None = None
    export_dir: str = "weights"
    export_fp16: bool = True
    export_overwrite: bool = False
    wandb: WandbConfig = field(default_factory=WandbConfig)
    runs_dir: str = "runs"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.warmup_steps < 0:
            raise ValueError(f"need steps ≥ 1, batch_size ≥ 1, warmup_steps ≥ 0; got {self.steps}, "
                             f"{self.batch_size}, {self.warmup_steps}")
        check_seed(self.seed)
        if self.amp not in (*DTYPE_CHOICES, "none"):
            raise ValueError(f"amp must be one of {[*DTYPE_CHOICES, 'none']}; got {self.amp!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {list(TARGETS)}; got {self.target!r}")
        if self.target == "clean" and (self.data.generator.variation == "none" or self.data.generator.n_frames <= 0
                                       or self.data.stores):
            raise ValueError("target=clean reconstructs the scene as built from varied renderings of the same state: "
                             "set data.generator.n_frames > 0, data.generator.variation=standard_visual (or another "
                             "visual variation) and no data.stores")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be 0 < lo ≤ hi ≤ 1; got {self.crop_scale}")
        size = get_config(self.model.variant).img_size
        if any(s < size or s % size for s in self.s2_img_sizes):
            raise ValueError(f"s2_img_sizes must be multiples of {self.model.variant}'s {size} px (each scale is "
                             f"cut into tiles of the model's size, as S² does); got {list(self.s2_img_sizes)}")
        if self.export_name is not None:
            if get_config(self.export_name) != get_config(self.model.variant):  # raises for unknown names
                raise ValueError(f"export_name {self.export_name!r} is registered with another architecture "
                                 f"than model.variant {self.model.variant!r}; register it in s2robot/vision/vit.py")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def export_path(self) -> Path | None:
        """``<export_dir>/<export_name>.pth``; None without an export."""
        return None if self.export_name is None else Path(self.export_dir) / f"{self.export_name}.pth"


@dataclass
class PretrainResult:
    """losses: per step run by this call; history: every step's loss since step 0 (resumes included)."""

    run_dir: Path
    step: int
    losses: list[float]
    history: list[float]
    export_path: Path | None


@torch.no_grad()
def reconstruction_grid(model: MaskedAutoencoder, frames: torch.Tensor, seed: int = 0) -> np.ndarray:
    """One row per frame: original | masked | prediction | prediction with the visible patches pasted; uint8."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = imagenet_normalize(to_float(frames, device))
    out = model(x, generator=torch.Generator().manual_seed(seed))
    masked, pred, pasted = model.reconstruct(x, out)
    panels = [imagenet_normalize(t, inverse=True).clamp(0, 1) for t in (x, masked, pred, pasted)]
    rows = torch.cat(panels, dim=3)  # (B, 3, S, 4S)
    model.train(was_training)
    return (rearrange(rows, "b c h w -> (b h) w c") * 255).round().byte().cpu().numpy()


def _check_frames(frames: np.ndarray, variant: str, s2_img_sizes: Sequence[int] = ()) -> None:
    """Frames are what the encoder will be given: the model's size, or with S² one of its scales (each scale is
    then the frame resized as S² resizes it)."""
    sizes = sorted({get_config(variant).img_size, *s2_img_sizes})
    if frames.ndim != 4 or frames.shape[1] not in sizes or frames.shape[1:] != (frames.shape[1],) * 2 + (3,) \
            or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, S, S, 3) with S in {sizes} for {variant}; got "
                         f"{frames.dtype} {frames.shape} (set the generator's or recorder's image_size)")


class _MAERun:
    """Model, optimizer, schedule and RNG of one pretraining run; resumed from ``last.pt`` when it exists."""

    def __init__(self, cfg: PretrainConfig, device: torch.device, progress: bool) -> None:
        self.cfg, self.path = cfg, cfg.run_dir / "last.pt"
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.model = MaskedAutoencoder(cfg.model, torch.Generator().manual_seed(cfg.seed)).to(device)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.weight_decay), lr=cfg.lr,
                                           betas=tuple(cfg.betas))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr))
        self.step, self.history, self.wandb_id = 0, [], None
        if self.path.is_file():
            self._resume(progress)

    def _resume(self, progress: bool) -> None:
        ckpt = load_tensors(self.path)
        if ckpt["cfg"]["model"] != asdict(self.cfg.model):
            raise ValueError(f"{self.path} is of another model ({ckpt['cfg']['model']}, now "
                             f"{asdict(self.cfg.model)}); pick another name= or delete {self.cfg.run_dir}")
        if ckpt["cfg"].get("target", "input") != self.cfg.target:
            raise ValueError(f"{self.path} was pretrained with target={ckpt['cfg'].get('target', 'input')}, now "
                             f"{self.cfg.target}; pick another name= or delete {self.cfg.run_dir}")
        if list(ckpt["cfg"].get("s2_img_sizes", [])) != list(self.cfg.s2_img_sizes):
            raise ValueError(f"{self.path} was pretrained with s2_img_sizes={ckpt['cfg'].get('s2_img_sizes', [])}, "
                             f"now {list(self.cfg.s2_img_sizes)}; pick another name= or delete {self.cfg.run_dir}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])
        self.gen.set_state(ckpt["rng"]["generator"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.step, self.history, self.wandb_id = ckpt["step"], list(ckpt["history"]), ckpt.get("wandb_id")
        if progress:
            print(f"resuming {self.path} at step {self.step}/{self.cfg.steps}")

    def save(self, wandb_id: str | None) -> None:
        save_checkpoint(self.path, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(), "step": self.step, "history": self.history,
            "cfg": asdict(self.cfg), "rng": {"generator": self.gen.get_state(), "torch": torch.get_rng_state()},
            "wandb_id": wandb_id})

    def train_step(self, pool: torch.Tensor, device: torch.device, amp: torch.dtype | None,
                   targets: torch.Tensor | None = None) -> float:
        """One step on a batch of ``pool`` (T, S, S, 3) uint8; with ``targets`` (T', S, S, 3), image i of the pool
        reconstructs ``targets[i % T']`` (the same state rendered as built), cropped and tiled as the image is."""
        cfg, gen, model = self.cfg, self.gen, self.model
        idx = torch.randint(len(pool), (cfg.batch_size,), generator=gen)
        x = to_float(pool[idx], device)  # (B, 3, S, S)
        if targets is not None:  # one augmentation for both: stacked on channels
            x = torch.cat([x, to_float(targets[idx % len(targets)], device)], dim=1)  # (B, 6, S, S)
        if cfg.s2_img_sizes:
            x = s2_tiles(x, cfg.s2_img_sizes, gen, model.encoder.cfg.img_size)
        x = random_resized_crop(x, cfg.crop_scale, cfg.crop_ratio, cfg.hflip, gen)
        x, y = (x[:, :3], x[:, 3:]) if targets is not None else (x, None)
        noise = torch.rand(cfg.batch_size, model.num_patches, generator=gen).to(device)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            out = model(imagenet_normalize(x), noise, target=None if y is None else imagenet_normalize(y))
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        self.schedule.step()
        self.step += 1
        loss = out.loss.item()
        self.history.append(loss)
        return loss


def _export(cfg: PretrainConfig, run: _MAERun, n_frames: int, command: str | None, progress: bool) -> Path:
    tail = run.history[-50:]
    provenance = {
        "name": cfg.export_name, "variant": cfg.model.variant,
        "method": (f"MAE with S² tiles of {list(cfg.s2_img_sizes)} px" if cfg.s2_img_sizes else "MAE (MVP recipe)")
        + (f", reconstructing the scene as built from renderings varied by {cfg.data.generator.variation!r}"
           if cfg.target == "clean" else ""), "target": cfg.target,
        "mask_ratio": cfg.model.mask_ratio, "decoder": list(cfg.model.decoder_size()),
        "data": describe_data(cfg.data, n_frames, cfg.crop_scale, cfg.crop_ratio, cfg.hflip, cfg.s2_img_sizes),
        "steps": run.step, "batch_size": cfg.batch_size,
        "images_seen": run.step * cfg.batch_size, "final_loss": sum(tail) / max(1, len(tail)),
        "first_loss": run.history[0] if run.history else None, "seed": cfg.seed, "command": command,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    path, _ = export_encoder(run.model.encoder_state_dict(), cfg.export_path, cfg.export_fp16, provenance,
                             cfg.export_overwrite)
    if progress:
        print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path


def pretrain_mae(
    cfg: PretrainConfig,
    frames: np.ndarray | None = None,
    progress: bool = True,
    command: str | None = None,
    stop_at: int | None = None,
) -> PretrainResult:
    """Pretrain (or resume, from ``runs/<name>/last.pt``) an MAE; export the encoder when asked.

    frames: uint8 (T, S, S, 3) to train on, default ``load_frames(cfg.data)``; with ``target=clean`` a pair
    (varied, clean) of such arrays, row by row the same states, default ``paired_frames(cfg.data)``. command: the
    command line, recorded in the export's provenance. stop_at: stop at this step after a checkpoint, as an interrupted
    run would (no export); the same call without it resumes.

    An export that would replace a file is refused here, before any training (``check_export_target``). The run
    folder is locked for this writer while it trains and exports: a second pretraining of the same run is refused
    with the first one's pid and host instead of interleaving checkpoints.
    """
    # 1. setup: the export's target, device, precision, data
    if cfg.export_path is not None:
        check_export_target(cfg.export_path, cfg.export_overwrite)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    amp = autocast_dtype(cfg.amp, device)
    targets = None
    if cfg.target == "clean":  # varied and clean renderings of the same states: half the inputs are each
        varied, clean = paired_frames(cfg.data, progress) if frames is None else frames
        frames, targets = np.concatenate([clean, varied]), torch.from_numpy(clean)
    elif frames is None:
        frames = load_frames(cfg.data, progress)
    _check_frames(frames, cfg.model.variant, cfg.s2_img_sizes)
    with writer_lock(cfg.run_dir, "run"):
        return _train_and_export(cfg, torch.from_numpy(frames), targets, device, amp, progress, command, stop_at)


def _train_and_export(cfg: PretrainConfig, pool: torch.Tensor, targets: torch.Tensor | None, device: torch.device,
                      amp: torch.dtype | None, progress: bool, command: str | None, stop_at: int | None
                      ) -> PretrainResult:
    """Steps 2-4 of ``pretrain_mae`` on the frames ``pool`` (T, S, S, 3) uint8, with the run folder locked."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)

    # 2. model, optimizer, schedule; resume when a checkpoint exists
    run = _MAERun(cfg, device, progress)
    vis = pool[torch.linspace(0, len(pool) - 1, 4).long()]  # (4, S, S, 3) uint8
    size = run.model.encoder.cfg.img_size
    if vis.shape[1] != size:  # frames at an S² scale other than the model's: shown whole, resized
        vis = F.interpolate(vis.permute(0, 3, 1, 2).float(), size=size, mode="bicubic")
        vis = vis.round().clamp(0, 255).byte().permute(0, 2, 3, 1)
    logger = RunLogger(cfg.run_dir / "log.jsonl", cfg.wandb, cfg.name, asdict(cfg), run.wandb_id)

    # 3. train
    run.model.train()
    losses: list[float] = []
    bar = tqdm(total=cfg.steps, initial=run.step, unit="step", desc=f"MAE {cfg.name}", disable=not progress)
    t0, seen = time.perf_counter(), 0
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    while run.step < end:
        losses.append(run.train_step(pool, device, amp, targets))
        seen += cfg.batch_size
        bar.update(1)
        step = run.step
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate, lr = seen / (time.perf_counter() - t0), run.optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
            logger.log({"loss": losses[-1], "lr": lr, "img_per_s": rate}, step)
        if step % cfg.recon_every == 0 or step == cfg.steps:
            png = cfg.run_dir / "recon" / f"step_{step:06d}.png"
            png.parent.mkdir(exist_ok=True)
            imageio.imwrite(png, reconstruction_grid(run.model, vis, cfg.seed))
        if step % cfg.ckpt_every == 0 or step == end:
            run.save(logger.run_id)
    bar.close()

    # 4. export the encoder in MVP's format
    export_path = None
    if cfg.export_name is not None and run.step >= cfg.steps:
        export_path = _export(cfg, run, len(pool), command, progress)
    logger.finish()
    return PretrainResult(cfg.run_dir, run.step, losses, run.history, export_path)

