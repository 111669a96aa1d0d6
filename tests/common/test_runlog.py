"""The run logger: JSON lines, resume truncation, a torn last line, and wandb imported only when it is on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_torn_last_line_is_dropped_on_read_and_on_resume(tmp_path: Path) -> None:
    """A run killed mid-write leaves a torn last line: reading drops it with a warning naming the file, and a
    resume rewrites the file without it, so the next line is not glued to it."""
    path = tmp_path / "run" / "metrics.jsonl"
    path.parent.mkdir()
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 2.0}\n{"step": 3, "lo')
    with pytest.warns(UserWarning, match=rf"{path}.*torn last line"):
        assert read_jsonl(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}]
    with pytest.warns(UserWarning, match="torn last line"):
        log = RunLogger(path, WandbConfig(mode="disabled"), "t", {}, resume_step=2)
    log.log({"loss": 3.5}, 3)
    assert path.read_text() == '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 2.0}\n{"step": 3, "loss": 3.5}\n'
    path.write_text(path.read_text() + "{not json\n")  # unparseable, though it ends with a newline
    with pytest.warns(UserWarning, match="torn last line"):
        assert len(read_jsonl(path)) == 3
    with pytest.warns(UserWarning, match="rewritten without it"):  # a new run appending to the file drops it too
        RunLogger(path, WandbConfig(mode="disabled"), "t", {}).log({"loss": 4.0}, 4)
    assert read_jsonl(path)[-2:] == [{"step": 3, "loss": 3.5}, {"step": 4, "loss": 4.0}]


def test_unparseable_line_before_the_last_is_an_error(tmp_path: Path) -> None:
    """Damage before the last line is not a torn write: ValueError naming the file, the line and the fix."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=rf"{path} line 2 is not JSON.*remove or repair"):
        read_jsonl(path)
    with pytest.raises(ValueError, match="line 2"):
        RunLogger(path, WandbConfig(mode="disabled"), "t", {}, resume_step=3)
