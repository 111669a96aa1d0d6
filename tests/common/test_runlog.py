"""The run logger: JSON lines, resume truncation, and wandb imported only when it is on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from s2robot.common.runlog import RunLogger, WandbConfig, read_jsonl


def test_jsonl_and_resume_truncation(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.jsonl"
    log = RunLogger(path, WandbConfig(mode="disabled"), "t", {})
    for step in (1, 2, 3):
        log.log({"loss": float(step)}, step)
    log.finish()
    RunLogger(path, WandbConfig(mode="disabled"), "t", {}, resume_step=2)
    assert read_jsonl(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}]


def test_wandb_is_not_imported_when_disabled(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from s2robot.common.runlog import RunLogger, WandbConfig; "
            f"RunLogger(Path({str(tmp_path / 'm.jsonl')!r}), WandbConfig(mode='disabled'), 't', {{}}).log({{}}, 1); "
            "import s2robot.workflows.train, s2robot.workflows.evaluate; assert 'wandb' not in sys.modules")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
