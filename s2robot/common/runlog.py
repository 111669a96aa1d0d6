"""One run logger: JSON lines in the run folder and wandb (imported only when it is on).

wandb is off when ``mode`` is ``disabled`` or the environment says ``WANDB_MODE=disabled`` (the tests do);
a machine without wandb installed runs with ``wandb.mode=disabled``.
"""

from __future__ import annotations

import json
import os
import warnings
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


def _parse_jsonl(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """(records, whether an unparseable last line was dropped) of a JSON-lines file; none when it does not exist.

    A process killed mid-write leaves a torn last line: it is dropped. An unparseable line before the last is not
    what a kill leaves, so it raises.
    """
    if not path.exists():
        return [], False
    lines = [(n, ln) for n, ln in enumerate(path.read_text().splitlines(), start=1) if ln.strip()]
    records = []
    for j, (n, ln) in enumerate(lines):
        try:
            records.append(json.loads(ln))
        except ValueError as e:
            if j == len(lines) - 1:
                return records, True
            raise ValueError(f"{path} line {n} is not JSON ({e}), and it is not the last line (a run killed "
                             "mid-write tears only the last): the file was edited or damaged; remove or repair that "
                             "line") from None
    return records, False


def _warn_torn(path: Path, rewritten: bool) -> None:
    fix = "the file is rewritten without it" if rewritten else "it is ignored"
    warnings.warn(f"{path}: dropped a torn last line (not JSON: a run killed while writing it); {fix}", stacklevel=3)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a JSON-lines file (none when it does not exist). A torn (unparseable) last line, left by a kill
    mid-write, is dropped with a warning; an unparseable line before it raises ValueError naming file and line."""
    records, torn = _parse_jsonl(Path(path))
    if torn:
        _warn_torn(Path(path), rewritten=False)
    return records


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of a run's ``metrics.jsonl``."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


class RunLogger:
    """Metrics of one run: a line per logged step in ``path`` and the same to wandb.

    resume_step: drop lines logged after this step (they belong to the part of a run that a resume redoes).
    An existing file's torn last line (a kill mid-write) is dropped, with a warning, so the next line does not
    continue it.
    """

    def __init__(self, path: Path, wandb_cfg: WandbConfig, name: str, config: Mapping[str, Any],
                 run_id: str | None = None, resume_step: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            records, torn = _parse_jsonl(path)
            if torn:
                _warn_torn(path, rewritten=True)
            if torn or resume_step is not None:  # the next line must not continue a torn one
                kept = [d for d in records if resume_step is None or d["step"] <= resume_step]
                path.write_text("".join(f"{json.dumps(d)}\n" for d in kept))
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
