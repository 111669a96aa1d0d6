"""Closed-loop evaluation: a trained policy picks cubes at the 16 evaluation positions, encoding live.

Each control step, every running episode's camera frames are encoded in one batch by the frozen S²
encoder (on the GPU when present), the policy's ``act`` turns features + proprio into actions (keeping
its own 16-step history), and the envs step. Episodes run in parallel in a gymnasium ``AsyncVectorEnv``
(one worker process per slot) or, with ``n_envs=0``, one after another in this process; both give the
same results for the same seeds.

Success is reported the way the paper does, over the 16 ``EVAL_POSITIONS`` (× ``repeats`` with different
arm-noise seeds), with a Wilson 95% interval; ``write_outputs`` adds ``results.json``, a table, a success
map over the workspace and mp4 videos from the ``video`` camera.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from s2robot.encoder import FrozenS2Encoder, encoder_fingerprint
from s2robot.env import EnvConfig, make_eval_env
from s2robot.policy import FEAT_PREFIX, ChunkTransformerPolicy
from s2robot.train import Evaluator, TrainConfig, config_from_dict, load_checkpoint, load_policy
from s2robot.weights import resolve_weights

VIDEO_SIZE = (240, 320)  # (H, W) of evaluation videos [px]


@dataclass
class EvalConfig:
    """``scripts/eval.py`` (``configs/eval.yaml``).

    checkpoint: a ``train_bc.py`` checkpoint; its config rebuilds the encoder and the env
    repeats: episodes per evaluation position (different arm-noise seeds; set joint_noise > 0 for them
        to differ)
    joint_noise: arm noise at reset [rad]; None keeps the training env's value
    max_steps: episode limit [steps]; None keeps the training env's value
    n_envs: parallel env worker processes (0 = sequential, in this process)
    videos: how many episodes to film (-1 all, 0 none), in episode order
    encoder_device / encoder_dtype: override where and in what precision the encoder runs (the features'
        meaning, and so the fingerprint, stay the same)
    out: output folder; default ``<run dir>/eval``
    """

    checkpoint: str = "runs/cube_pick/checkpoints/last.pt"
    use_ema: bool = True
    repeats: int = 1
    seed: int = 1000
    joint_noise: float | None = None
    max_steps: int | None = None
    n_envs: int = 16
    videos: int = 4
    encoder_device: str | None = None
    encoder_dtype: str | None = None
    device: str = "auto"
    out: str | None = None
    wandb_mode: str = "offline"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.n_envs < 0:
            raise ValueError(f"need repeats ≥ 1 and n_envs ≥ 0, got {self.repeats}, {self.n_envs}")


@dataclass(frozen=True)
class Episode:
    """One evaluation episode: cube position ``position`` (index into the positions), repeat, env seed."""

    position: int
    cube_xy: tuple[float, float]
    repeat: int
    seed: int


@dataclass
class EpisodeResult:
    position: int
    cube_xy: tuple[float, float]
    repeat: int
    seed: int
    success: bool
    steps_to_success: int | None  # control steps until the first success; None if never
    steps: int  # steps run
    max_lift: float  # highest cube lift above rest [m]
    final_fingertip: list[float] = field(default_factory=list)  # (3,) [m], for diagnostics


def eval_episodes(positions: Sequence[Sequence[float]], repeats: int = 1, seed: int = 1000) -> list[Episode]:
    """Every position × repeat, position-major; seeds ``seed + i`` in that order."""
    eps = [(p, tuple(map(float, xy)), r) for p, xy in enumerate(positions) for r in range(repeats)]
    return [Episode(p, xy, r, seed + i) for i, (p, xy, r) in enumerate(eps)]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def cameras_of_policy(policy: ChunkTransformerPolicy) -> list[str]:
    return [k.removeprefix(FEAT_PREFIX) for k in policy.feature_keys]


class _SequentialEnvs:
    """The vector-env calls ``run_episodes`` makes, for one in-process env stepped slot by slot."""

    def __init__(self, envs: list[gym.Env]) -> None:
        self.envs = envs

    def reset(self, seed: list[int], options: dict) -> tuple[dict, dict]:
        outs = [e.reset(seed=s, options=options) for e, s in zip(self.envs, seed, strict=True)]
        return _stack([o for o, _ in outs]), _stack([i for _, i in outs])

    def step(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        outs = [e.step(a) for e, a in zip(self.envs, actions, strict=True)]
        obs, rew, term, trunc, info = zip(*outs, strict=True)
        return _stack(obs), np.array(rew), np.array(term), np.array(trunc), _stack(info)

    def close(self) -> None:
        for e in self.envs:
            e.close()


def _stack(dicts: Sequence[dict]) -> dict:
    keys = set.intersection(*(set(d) for d in dicts))
    return {k: np.stack([np.asarray(d[k]) for d in dicts]) for k in keys}


def _make_envs(env_cfg: EnvConfig, n: int, video_slots: int, vectorized: bool) -> Any:
    fns = [functools.partial(make_eval_env, env_cfg, i, VIDEO_SIZE if i < video_slots else None) for i in range(n)]
    if not vectorized:
        return _SequentialEnvs([fn() for fn in fns])
    return gym.vector.AsyncVectorEnv(fns, context="spawn", autoreset_mode=gym.vector.AutoresetMode.DISABLED)


@torch.no_grad()
def run_episodes(policy: ChunkTransformerPolicy, encoder: FrozenS2Encoder, env_cfg: EnvConfig,
                 episodes: Sequence[Episode], n_envs: int = 16, videos: int = 0, progress: bool = True
                 ) -> tuple[list[EpisodeResult], dict[int, list[np.ndarray]]]:
    """Roll ``policy`` out on ``episodes`` in waves of ``n_envs`` parallel envs (0: one at a time here).

    Returns the results (in ``episodes`` order) and the video frames of the first ``videos`` episodes
    ({episode index: [(H, W, 3) uint8 frames]}).
    """
    cameras = cameras_of_policy(policy)
    missing = [c for c in cameras if c not in env_cfg.cameras]
    if missing:
        raise ValueError(f"the policy reads cameras {cameras} but the env renders {list(env_cfg.cameras)}")
    env_cfg = EnvConfig(**{**asdict(env_cfg), "cameras": cameras, "terminate_on_success": True})
    videos = len(episodes) if videos < 0 else min(videos, len(episodes))
    vectorized = n_envs > 0
    width = min(n_envs, len(episodes)) if vectorized else 1
    device = next(policy.parameters()).device
    results: list[EpisodeResult] = []
    frames: dict[int, list[np.ndarray]] = {}
    bar = tqdm(total=len(episodes), unit="episode", desc="evaluating", disable=not progress)
    envs = _make_envs(env_cfg, width, min(videos, width), vectorized)
    try:
        for start in range(0, len(episodes), width):
            wave = list(episodes[start : start + width])
            slots = wave + [wave[0]] * (width - len(wave))  # pad the last wave; extra slots are ignored
            obs, info = envs.reset(seed=[e.seed for e in slots],
                                   options={"per_env": [{"cube_xy": e.cube_xy} for e in slots]})
            policy.reset(batch_size=width)
            done = np.zeros(width, bool)
            done[len(wave):] = True
            success_step = np.full(width, -1)
            steps = np.zeros(width, int)
            max_lift = np.asarray(info["lift_height"], float).copy()
            film = [start + i < videos for i in range(width)]
            for i in range(width):
                if film[i]:
                    frames[start + i] = [info["video_frame"][i]]
            for t in range(env_cfg.max_steps):
                feats = {FEAT_PREFIX + c: encoder(obs[c]).to(device) for c in cameras}  # (N, F) each
                action = policy.act({**feats, "proprio": obs["proprio"]}).float().cpu().numpy()  # (N, A)
                obs, _, term, trunc, info = envs.step(action.astype(np.float32))
                running = ~done
                steps[running] += 1
                lift = np.asarray(info["lift_height"], float)
                max_lift[running] = np.maximum(max_lift[running], lift[running])
                hit = running & np.asarray(info["is_success"], bool) & (success_step < 0)
                success_step[hit] = t + 1
                for i in np.flatnonzero(running):
                    if film[i]:
                        frames[start + i].append(info["video_frame"][i])
                tip = np.asarray(info["fingertip_pos"], float)
                for i in np.flatnonzero(running & (term | trunc)):
                    bar.update(1)
                    if i < len(wave):
                        results.append(_result(wave[i], success_step[i], steps[i], max_lift[i], tip[i]))
                done |= term | trunc
                if done.all():
                    break
            for i in np.flatnonzero(~done):  # max_steps reached without truncation (cannot happen normally)
                results.append(_result(wave[i], success_step[i], steps[i], max_lift[i], tip[i]))
                bar.update(1)
    finally:
        envs.close()
        bar.close()
    order = {(e.position, e.repeat): k for k, e in enumerate(episodes)}
    results.sort(key=lambda r: order[(r.position, r.repeat)])
    return results, frames


def _result(e: Episode, success_step: int, steps: int, max_lift: float, tip: np.ndarray) -> EpisodeResult:
    ok = success_step >= 0
    return EpisodeResult(e.position, e.cube_xy, e.repeat, e.seed, bool(ok), int(success_step) if ok else None,
                         int(steps), float(max_lift), [float(v) for v in tip])


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Overall success with its Wilson 95% interval, and per-position success."""
    n, k = len(results), sum(r.success for r in results)
    lo, hi = wilson_interval(k, n)
    per_position: dict[int, dict[str, Any]] = {}
    for r in results:
        p = per_position.setdefault(r.position, {"position": r.position, "cube_xy": list(r.cube_xy),
                                                 "successes": 0, "episodes": 0, "steps_to_success": []})
        p["successes"] += int(r.success)
        p["episodes"] += 1
        if r.success:
            p["steps_to_success"].append(r.steps_to_success)
    for p in per_position.values():
        p["success_rate"] = p["successes"] / p["episodes"]
    steps = [r.steps_to_success for r in results if r.success]
    return {"success_rate": k / n if n else 0.0, "successes": k, "episodes": n, "ci95": [lo, hi],
            "median_steps_to_success": float(np.median(steps)) if steps else None,
            "per_position": [per_position[p] for p in sorted(per_position)]}


def format_table(results: Sequence[EpisodeResult], summary: dict[str, Any], label: str = "") -> str:
    """A markdown table: one row per position, then the overall rate with its interval."""
    rows = ["| pos | x [m] | y [m] | success | steps to success | max lift [cm] |", "|---|---|---|---|---|---|"]
    by_pos: dict[int, list[EpisodeResult]] = {}
    for r in results:
        by_pos.setdefault(r.position, []).append(r)
    for p, rs in sorted(by_pos.items()):
        ok = sum(r.success for r in rs)
        steps = [r.steps_to_success for r in rs if r.success]
        rows.append(f"| {p} | {rs[0].cube_xy[0]:.3f} | {rs[0].cube_xy[1]:+.3f} | {ok}/{len(rs)} | "
                    f"{np.median(steps) if steps else '-'} | {100 * max(r.max_lift for r in rs):.1f} |")
    lo, hi = summary["ci95"]
    rows.append(f"\n**success {100 * summary['success_rate']:.1f}%** ({summary['successes']}/{summary['episodes']}"
                f", Wilson 95% CI {100 * lo:.1f}–{100 * hi:.1f}%){' — ' + label if label else ''}")
    return "\n".join(rows)


def plot_success_map(results: Sequence[EpisodeResult], path: Path, title: str = "") -> Path:
    """A top view of the workspace with each position coloured by its success rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from envs import WORKSPACE  # torch-free constants; s2robot reads envs only here, for the plot frame

    summary = summarize(results)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.add_patch(plt.Rectangle((WORKSPACE.y_min, WORKSPACE.x_min), WORKSPACE.y_max - WORKSPACE.y_min,
                               WORKSPACE.x_max - WORKSPACE.x_min, fill=False, ls="--", color="0.5"))
    ys = [p["cube_xy"][1] for p in summary["per_position"]]
    xs = [p["cube_xy"][0] for p in summary["per_position"]]
    rates = [p["success_rate"] for p in summary["per_position"]]
    sc = ax.scatter(ys, xs, c=rates, cmap="RdYlGn", vmin=0, vmax=1, s=260, edgecolors="k")
    for p in summary["per_position"]:
        ax.annotate(f"{p['position']}\n{p['successes']}/{p['episodes']}", (p["cube_xy"][1], p["cube_xy"][0]),
                    ha="center", va="center", fontsize=6)
    ax.set_xlabel("y [m] (robot's left +)")
    ax.set_ylabel("x [m] (away from the robot)")
    ax.invert_xaxis()
    ax.set_aspect("equal")
    lo, hi = summary["ci95"]
    ax.set_title(f"{title}\nsuccess {100 * summary['success_rate']:.1f}% (95% CI {100 * lo:.0f}–{100 * hi:.0f}%)",
                 fontsize=8)
    fig.colorbar(sc, ax=ax, label="success rate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_videos(frames: dict[int, list[np.ndarray]], results: Sequence[EpisodeResult], out: Path,
                 fps: int = 10) -> list[Path]:
    """mp4 per filmed episode, named by position, repeat and outcome."""
    import imageio.v3 as iio

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, clip in sorted(frames.items()):
        r = results[k]
        path = out / f"pos{r.position:02d}_rep{r.repeat}_{'success' if r.success else 'fail'}.mp4"
        iio.imwrite(path, np.stack(clip), fps=fps, codec="libx264", macro_block_size=8)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------- top level
def encoder_for_checkpoint(ckpt: dict[str, Any], device: str | None = None, dtype: str | None = None
                           ) -> FrozenS2Encoder:
    """The frozen encoder a checkpoint was trained on; refuses one whose features would mean something else."""
    train_cfg = config_from_dict(ckpt["config"])
    enc_cfg = train_cfg.encoder
    if device is not None:
        enc_cfg.device = device
    if dtype is not None:
        enc_cfg.dtype = dtype
    digest = resolve_weights(enc_cfg.variant, enc_cfg.weights, enc_cfg.seed, enc_cfg.allow_download).digest
    found = encoder_fingerprint(enc_cfg, digest)
    if found != ckpt["encoder_fingerprint"]:
        raise ValueError(
            f"the checkpoint was trained on features of encoder {ckpt['encoder_fingerprint']}, but its config "
            f"now builds encoder {found} ({enc_cfg.variant}, weights {enc_cfg.weights!r} → digest {digest[:12]}): "
            "the weights file changed or is a different one. Put the original weights back, or retrain "
            "(scripts/train_bc.py) with the current encoder")
    return FrozenS2Encoder(enc_cfg)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Load, roll out, write ``results.json``, table, success map and videos; returns the results dict."""
    ckpt = load_checkpoint(cfg.checkpoint)
    train_cfg = config_from_dict(ckpt["config"])
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    encoder = encoder_for_checkpoint(ckpt, cfg.encoder_device, cfg.encoder_dtype)
    policy, _ = load_policy(cfg.checkpoint, device, use_ema=cfg.use_ema)
    env_cfg = train_cfg.env
    if cfg.joint_noise is not None:
        env_cfg.joint_noise = cfg.joint_noise
    if cfg.max_steps is not None:
        env_cfg.max_steps = cfg.max_steps
    from envs import EVAL_POSITIONS

    episodes = eval_episodes(EVAL_POSITIONS, cfg.repeats, cfg.seed)
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).resolve().parent.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results, frames = run_episodes(policy, encoder, env_cfg, episodes, cfg.n_envs, cfg.videos, cfg.progress)
    elapsed = time.perf_counter() - t0
    summary = summarize(results)
    desc = encoder.describe()
    label = (f"{desc['variant']} {desc['img_sizes']} {desc['readout']}, "
             + ("RANDOM weights (not pretrained)" if desc["weights_random"] else f"weights {desc['weights']}"))
    report = {
        **summary,
        "label": label,
        "checkpoint": str(Path(cfg.checkpoint).resolve()),
        "checkpoint_step": ckpt["step"],
        "encoder": desc,
        "weights_random": desc["weights_random"],
        "env": asdict(env_cfg),
        "eval": asdict(cfg),
        "seeds": [e.seed for e in episodes],
        "time_s": elapsed,
        "episodes_detail": [asdict(r) for r in results],
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    table = format_table(results, summary, label)
    (out / "table.md").write_text(table + "\n")
    plot_success_map(results, out / "success_map.png", f"{train_cfg.name} @ step {ckpt['step']}\n{label}")
    videos = write_videos(frames, results, out / "videos")
    report["outputs"] = {"dir": str(out), "videos": [str(v) for v in videos]}
    _log_wandb(cfg, train_cfg.name, report, out, videos)
    return report


def _log_wandb(cfg: EvalConfig, name: str, report: dict[str, Any], out: Path, videos: list[Path]) -> None:
    import os

    if cfg.wandb_mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
        return
    import wandb

    run = wandb.init(project="s2robot", name=f"{name}-eval", job_type="eval", mode=cfg.wandb_mode,
                     dir=str(out), config={"eval": report["eval"], "encoder": report["encoder"]})
    run.log({"eval/success_rate": report["success_rate"], "eval/ci95_low": report["ci95"][0],
             "eval/ci95_high": report["ci95"][1], "eval/success_map": wandb.Image(str(out / "success_map.png")),
             **{f"eval/video/{v.stem}": wandb.Video(str(v), format="mp4") for v in videos}})
    run.finish()


def periodic_evaluator(train_cfg: TrainConfig, n_envs: int = 16, max_steps: int | None = None) -> Evaluator:
    """A ``train(cfg, evaluator=...)`` hook: success rate at the 16 positions every ``eval_every`` steps."""
    from envs import EVAL_POSITIONS

    encoder = FrozenS2Encoder(train_cfg.encoder)
    env_cfg = EnvConfig(**asdict(train_cfg.env))
    if max_steps is not None:
        env_cfg.max_steps = max_steps
    episodes = eval_episodes(EVAL_POSITIONS)

    def evaluator(policy: ChunkTransformerPolicy, step: int) -> dict[str, float]:
        was_training = policy.training
        policy.eval()
        try:
            results, _ = run_episodes(policy, encoder, env_cfg, episodes, n_envs, progress=False)
        finally:
            policy.train(was_training)
        s = summarize(results)
        return {"success_rate": s["success_rate"], "ci95_low": s["ci95"][0], "ci95_high": s["ci95"][1]}

    return evaluator
