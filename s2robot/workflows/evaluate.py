"""The evaluation workflow (``scripts/eval.py``): load a checkpoint without the trainer, roll it out at the 16
evaluation positions with live S² encoding, and write ``results.json``, a table, a success map and videos.

Success is reported the way the paper does, over the 16 ``EVAL_POSITIONS`` (× ``repeats`` with different
arm-noise seeds), with a Wilson 95% interval.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from s2robot.common.device import resolve_device
from s2robot.common.runlog import WandbConfig, wandb_run
from s2robot.policy.checkpoint import from_pretrained
from s2robot.policy.modeling import ChunkTransformerPolicy
from s2robot.sim.env import EnvConfig
from s2robot.sim.rollout import eval_episodes, run_episodes
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder, build_encoder, encoder_fingerprint, weights_digest
from s2robot.vision.oracle import OracleEncoder
from s2robot.workflows.report import format_table, plot_success_map, summarize, write_episode_videos

Evaluator = Callable[[ChunkTransformerPolicy, int], Mapping[str, float]]  # a train(cfg, evaluator=...) hook


@dataclass
class EvalConfig:
    """``scripts/eval.py`` (``configs/eval.yaml``).

    checkpoint: a ``train_bc.py`` checkpoint folder; its parts rebuild the encoder and the env
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

    checkpoint: str = "runs/cube_pick/checkpoints/last"
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
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.n_envs < 0:
            raise ValueError(f"need repeats ≥ 1 and n_envs ≥ 0, got {self.repeats}, {self.n_envs}")


def _structured(cls: type, d: Mapping[str, Any]) -> Any:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), dict(d)))


def encoder_for_checkpoint(encoder_part: Mapping[str, Any], device: str | None = None, dtype: str | None = None
                           ) -> FrozenS2Encoder | OracleEncoder:
    """The frozen encoder a checkpoint was trained on; refuses one whose features would mean something else."""
    enc_cfg: EncoderConfig = _structured(EncoderConfig, encoder_part["config"])
    if device is not None:
        enc_cfg.device = device
    if dtype is not None:
        enc_cfg.dtype = dtype
    digest = weights_digest(enc_cfg)
    found, trained = encoder_fingerprint(enc_cfg, digest), encoder_part["fingerprint"]
    if found != trained:
        raise ValueError(
            f"the checkpoint was trained on features of encoder {trained}, but its config "
            f"now builds encoder {found} ({enc_cfg.variant}, weights {enc_cfg.weights!r} → digest {digest[:12]}): "
            "the weights file changed or is a different one. Put the original weights back, or retrain "
            "(scripts/train_bc.py) with the current encoder")
    return build_encoder(enc_cfg)


def _label(desc: Mapping[str, Any]) -> str:
    if desc.get("privileged"):
        return f"ORACLE: PRIVILEGED {desc['readout']} (not vision)"
    weights = "RANDOM weights (not pretrained)" if desc["weights_random"] else f"weights {desc['weights']}"
    return f"{desc['variant']} {desc['img_sizes']} {desc['readout']}, {weights}"


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Load, roll out, write ``results.json``, table, success map and videos; returns the results dict."""
    policy, parts = from_pretrained(cfg.checkpoint, resolve_device(cfg.device), use_ema=cfg.use_ema)
    encoder = encoder_for_checkpoint(parts["encoder"], cfg.encoder_device, cfg.encoder_dtype)
    env_cfg: EnvConfig = _structured(EnvConfig, parts["env"])
    env_cfg.action_mode = policy.action_space  # the demos record both; the env runs the policy's
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
    summary, desc, step = summarize(results), encoder.describe(), parts["config"]["step"]
    report = {**summary, "label": _label(desc), "checkpoint": str(Path(cfg.checkpoint).resolve()),
              "checkpoint_step": step, "encoder": desc, "weights_random": desc["weights_random"],
              "env": asdict(env_cfg), "eval": asdict(cfg), "seeds": [e.seed for e in episodes],
              "time_s": time.perf_counter() - t0, "episodes_detail": [asdict(r) for r in results]}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "table.md").write_text(format_table(results, summary, report["label"]) + "\n")
    name = parts["config"].get("run", {}).get("name", Path(cfg.checkpoint).resolve().parent.parent.name)
    plot_success_map(results, out / "success_map.png", f"{name} @ step {step}\n{report['label']}")
    videos = write_episode_videos(frames, results, out / "videos")
    report["outputs"] = {"dir": str(out), "videos": [str(v) for v in videos]}
    _log_wandb(cfg, name, report, out, videos)
    return report


def _log_wandb(cfg: EvalConfig, name: str, report: dict[str, Any], out: Path, videos: list[Path]) -> None:
    run = wandb_run(cfg.wandb, f"{name}-eval", out, {"eval": report["eval"], "encoder": report["encoder"]},
                    job_type="eval")
    if run is None:
        return
    import wandb

    run.log({"eval/success_rate": report["success_rate"], "eval/ci95_low": report["ci95"][0],
             "eval/ci95_high": report["ci95"][1], "eval/success_map": wandb.Image(str(out / "success_map.png")),
             **{f"eval/video/{v.stem}": wandb.Video(str(v), format="mp4") for v in videos}})
    run.finish()


def periodic_evaluator(encoder_cfg: EncoderConfig, env: EnvConfig, n_envs: int = 16, max_steps: int | None = None
                       ) -> Evaluator:
    """A ``train(cfg, evaluator=...)`` hook: success rate at the 16 positions every ``eval_every`` steps."""
    from envs import EVAL_POSITIONS

    encoder = build_encoder(encoder_cfg)
    env_cfg = EnvConfig(**asdict(env))
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
