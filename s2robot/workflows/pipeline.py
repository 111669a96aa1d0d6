"""The whole job behind ``make run``: record demos → cache features → train → evaluate (by default the 16 paper
positions × 3 repeats; ``eval.positions``/``eval.n_random_positions`` choose held-out sets).

Every stage is resumable and skips work already done: the recorder appends until the store holds
``record.n_episodes``, the feature cache is keyed by (encoder, demos), training resumes from ``checkpoints/last``
(and returns at once when it has reached ``steps``); only the evaluation always runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from s2robot.sim.env import check_variation
from s2robot.workflows.evaluate import EvalConfig, evaluate
from s2robot.workflows.record import RecordConfig, record_demos
from s2robot.workflows.train import TrainConfig, train

OWN_RECORD = ("out", "env", "resume", "overwrite")  # RecordConfig fields the pipeline sets from train (and resumes)


@dataclass
class PipelineConfig:
    """``scripts/run_pipeline.py`` (``configs/pipeline.yaml``).

    train: everything about data, encoder, policy and env (``train.demos`` is where demos are recorded)
    record: the scripted-expert recording (``RecordConfig``: ``n_episodes``, ``workers``, ``seed``, ``noise_std``,
        ``tail_steps``, ``variation``, ...) of ``train.demos`` in ``train.env``, resumed until it holds
        ``record.n_episodes``; its ``out``, ``env``, ``resume`` and ``overwrite`` are the pipeline's (``OWN_RECORD``)
    scene_variation: when ``train.views.scenes`` names a scene store (scene views, ``s2robot.data.views``), the
        visual variation it is recorded in: the same episodes as the demos (same settings and seeds), other scenes
    eval: the evaluation (its ``checkpoint`` is set to this run's ``evaluate_checkpoint``: last or best); the
        checkpoint executes its chunks as ``train.policy`` trained it to, unless ``eval.executing`` says otherwise
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scene_variation: str = "standard_visual"
    evaluate_checkpoint: str = "last"

    def __post_init__(self) -> None:
        if self.evaluate_checkpoint not in ("last", "best"):
            raise ValueError(f"evaluate_checkpoint must be 'last' or 'best', got {self.evaluate_checkpoint!r}")
        default = RecordConfig()
        if set_here := [f"record.{k}" for k in OWN_RECORD if getattr(self.record, k) != getattr(default, k)]:
            raise ValueError(f"{', '.join(set_here)}: the pipeline records train.demos in train.env and resumes it; "
                             "set train.demos= and train.env instead (to record again, delete the store or name "
                             "another)")
        self.record_config()  # refuses bad recording settings (e.g. an unknown variation) before anything runs
        if self.train.views.n and self.train.views.scenes is not None:  # recorded only for scene views
            check_variation(self.scene_variation, self.train.env.id, visual=True)

    def record_config(self) -> RecordConfig:
        """The recording of ``train.demos`` in ``train.env``: resumed until it holds ``record.n_episodes``."""
        return replace(self.record, env=self.train.env, out=self.train.demos, resume=True)


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run the four stages; returns the evaluation report (see ``s2robot.workflows.evaluate.evaluate``)."""
    t = cfg.train
    if cfg.evaluate_checkpoint == "best" and t.val_fraction == 0 and not t.eval_every:
        raise ValueError("evaluate_checkpoint=best needs a validation split (train.val_fraction > 0) or periodic "
                         "evaluation (train.eval_every > 0) to choose best/ by; or use evaluate_checkpoint=last")
    scene = f", scene variation {cfg.record.variation}" if cfg.record.variation != "none" else ""
    print(f"[1/4] demos: {t.demos} ({cfg.record.n_episodes} scripted-expert episodes, cameras {list(t.env.cameras)} "
          f"at {t.env.image_size}²{scene})")
    record_demos(cfg.record_config(), progress=t.progress)
    if t.views.n and t.views.scenes is not None:
        print(f"      scene views: {t.views.scenes} (the same episodes in scenes varied by {cfg.scene_variation})")
        record_demos(replace(cfg.record_config(), out=t.views.scenes, variation=cfg.scene_variation),
                     progress=t.progress)
    print(f"[2/4 + 3/4] feature cache and training: {t.run_dir}")
    last = train(t)
    ckpt = last if cfg.evaluate_checkpoint == "last" else Path(last).with_name("best")
    positions = cfg.eval.position_set()[1]
    e = cfg.eval
    held = f" + {positions['n_random']} held-out × {e.held_out_repeats or e.repeats}" if positions["n_random"] else ""
    print(f"[4/4] evaluation of {ckpt}: {positions['fixed']} cube positions ({positions['set']}) × {e.repeats}{held}")
    cfg.eval.checkpoint = str(ckpt)
    return evaluate(cfg.eval)
