"""Stopping an evaluation on the arm rehearsed in franky-sim, with 2 env workers (each its own franky-sim): SIGTERM
ends it within seconds by the signal, with nothing written and no worker left; a SIGKILLed evaluation leaves no
worker running either."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from helpers import tiny_checkpoint
from stopping import Child, assert_workers_die_with_a_killed_evaluation, descendants, eval_script, wait_gone

pytest.importorskip("franky")
pytest.importorskip("franky_sim")


def test_a_stopped_arm_evaluation_stops_its_workers_and_exits(tmp_path: Path) -> None:
    child = Child(eval_script(tiny_checkpoint(tmp_path, arm=True), tmp_path / "eval"))
    try:
        child.wait_for("stepping")
        below = descendants(child.proc.pid)
        assert len(below) >= 2
        rc, took = child.stop(signal.SIGTERM)
        assert rc == -signal.SIGTERM, f"exit code {rc} after {took:.0f} s:\n{child.stderr()}"
        assert re.search(r"stopped: stopped by SIGTERM: \d of 4 episodes had finished", child.stderr())
        assert not (tmp_path / "eval" / "results.json").exists()
        assert wait_gone(below, 10) == []
    finally:
        child.kill()


def test_arm_env_workers_die_with_a_killed_evaluation() -> None:
    assert_workers_die_with_a_killed_evaluation("arm")
