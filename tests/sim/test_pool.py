"""The seed-ordered worker pool: order, a dead worker reported (not waited on forever), no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SleepyJob

from s2robot.sim.pool import seed_ordered

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
ORPHANS = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from helpers import SleepyJob
from s2robot.sim.pool import seed_ordered
for seed, _ in seed_ordered(SleepyJob(seconds=30), 0, 2):
    pass
"""


def test_results_come_in_seed_order() -> None:
    results = seed_ordered(SleepyJob(), 5, 2)
    assert [next(results)[0] for _ in range(6)] == [5, 6, 7, 8, 9, 10]
    results.close()


def test_a_killed_worker_is_reported_within_seconds() -> None:
    """A worker SIGKILLed mid-episode raises an error naming the seeds in flight within seconds, instead of
    evaluation or recording waiting for it forever."""
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"worker process \d+ died \(exit code -9\).*resume=true"):
        for _ in seed_ordered(SleepyJob(die_at=3), 0, 2):
            pass
    assert time.monotonic() - t0 < 15


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_die_with_a_killed_parent() -> None:
    """SIGKILL of the process that owns the pool leaves no worker behind (no spawn worker of a killed recorder
    stays blocked forever)."""
    proc = subprocess.Popen([sys.executable, "-c", ORPHANS, str(TESTS), str(ROOT)], stdout=subprocess.PIPE, text=True)
    pids = [int(proc.stdout.readline().split()[1]) for _ in range(2)]
    assert all(alive(p) for p in pids)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
