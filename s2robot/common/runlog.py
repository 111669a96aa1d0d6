"""One run logger: JSON lines in the run folder and wandb (imported only when it is on).

wandb is off when ``mode`` is ``disabled`` or the environment says ``WANDB_MODE=disabled`` (the tests do);
a machine without wandb installed runs with ``wandb.mode=disabled``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class WandbConfig:
    """wandb logging. mode: ``offline`` (default: no account needed, ``wandb sync runs/<name>/wandb``
    later), ``online``, or ``disabled``."""

    mode: str = "offline"
    project: str = "s2robot"
    entity: str | None = None


def wandb_enabled(cfg: WandbConfig) -> bool:
    return cfg.mode != "disabled" and os.environ.get("WANDB_MODE") != "disabled"


def wandb_run(cfg: WandbConfig, name: str, run_dir: str | Path, config: Mapping[str, Any],
              run_id: str | None = None, job_type: str | None = None) -> Any:
    """A started wandb run (resumed when ``run_id`` is given), or None when wandb is off."""
    if not wandb_enabled(cfg):
        return None
    import wandb

    return wandb.init(project=cfg.project, entity=cfg.entity, name=name, id=run_id, resume="allow" if run_id
                      else None, mode=cfg.mode, dir=str(run_dir), job_type=job_type, config=dict(config))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a JSON-lines file (none when it does not exist)."""
    path = Path(path)
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of a run's ``metrics.jsonl``."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


class RunLogger:
    """Metrics of one run: a line per logged step in ``path`` and the same to wandb.

    resume_step: drop lines logged after this step (they belong to the part of a run that a resume redoes).
    """

    def __init__(self, path: Path, wandb_cfg: WandbConfig, name: str, config: Mapping[str, Any],
                 run_id: str | None = None, resume_step: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and path.exists():
            kept = [json.dumps(d) for d in read_jsonl(path) if d["step"] <= resume_step]
            path.write_text("".join(f"{ln}\n" for ln in kept))
        self.run = wandb_run(wandb_cfg, name, path.parent, config, run_id)
        self.run_id = self.run.id if self.run is not None else run_id

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.run is not None:
            self.run.log(dict(metrics), step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
