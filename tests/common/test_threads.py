"""The thread budget: ``auto`` keeps a core for the robot's side, a number is taken as given, workers run 1 thread."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from s2robot.common.threads import WORKER_THREADS, check_threads, resolve_threads, set_threads, worker_threads


@pytest.mark.parametrize("threads,cores,beside,default,expected", [
    ("auto", 2, "franky-sim's physics", 2, (1, "torch threads 1 of 2 cores: 1 kept for franky-sim's physics")),
    ("auto", 16, "franky's 1 kHz control loop", None, (15, "torch threads 15 of 16 cores: 1 kept for franky's 1 kHz "
                                                           "control loop")),
    ("auto", 16, "franky-sim's physics", 4, (4, "torch threads 4 of 16 cores: 12 kept for franky-sim's physics")),
    ("auto", 1, "franky-sim's physics", 1, (1, "torch threads 1 of 1 cores: none left for franky-sim's physics")),
    ("auto", 2, None, 2, (2, "torch threads 2 of 2 cores")),
    ("auto", 8, None, 1, (1, "torch threads 1 of 8 cores")),  # torchrun's 1 per process (OMP_NUM_THREADS) stays
    ("3", 2, "franky-sim's physics", 2, (3, "torch threads 3 of 2 cores (as set)")),
])
def test_auto_keeps_a_core_for_the_robot(threads: str, cores: int, beside: str | None, default: int | None,
                                         expected: tuple[int, str]) -> None:
    assert resolve_threads(threads, cores, beside, default) == expected


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", ""])
def test_bad_thread_counts_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="threads must be 'auto' or a whole number ≥ 1"):
        check_threads(bad)


def test_set_threads_sets_torch_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads("1", "franky-sim's physics") == 1 and torch.get_num_threads() == 1
        assert "torch threads 1 of" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)


def test_processes_started_in_worker_threads_run_one_thread() -> None:
    """A process started within reads 1 OpenMP/MKL thread from its environment; this process's is restored."""
    saved = os.environ.get("OMP_NUM_THREADS")
    probe = "import os; print(os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])"
    with worker_threads():
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(WORKER_THREADS)] * 2
    assert os.environ.get("OMP_NUM_THREADS") == saved


def test_the_arm_envs_name_what_runs_beside_the_policy() -> None:
    from s2robot.sim.env import ARM_ENV_ID, EnvConfig

    assert EnvConfig().robot_side is None  # the simulated env steps only between the policy's steps
    assert EnvConfig(id=ARM_ENV_ID, options={"host": "franky-sim"}).robot_side == "franky-sim's physics"
    assert EnvConfig(id=ARM_ENV_ID, options={"host": "172.16.0.2"}).robot_side == "franky's 1 kHz control loop"
