"""Stop requests (SIGTERM, Ctrl-C) and worker lifetimes: a stop raises where it may cut the run short and waits out a
write, a stopped recording or evaluation closes its workers' envs and exits within seconds by the signal, and no
worker outlives its parent (also a SIGKILLed one)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from helpers import tiny_checkpoint
from stopping import (
    START_LIMIT_S,
    STOP_BOUND_S,
    TESTS,
    Child,
    ClosingJob,
    assert_workers_die_with_a_killed_evaluation,
    descendants,
    eval_script,
    wait_gone,
)

from s2robot.common.stop import StopRequested, interruptible, stop_requests
from s2robot.data.store import EpisodeStore
from s2robot.sim.pool import seed_ordered

POOL = """
import sys
sys.path[:0] = [sys.argv[1]]
from stopping import ClosingJob
from s2robot.common.stop import exit_on_stop
from s2robot.sim.pool import seed_ordered

def main():
    for _ in seed_ordered(ClosingJob(sys.argv[2], close_seconds=float(sys.argv[3])), 0, 2):
        pass

exit_on_stop(main)
"""


def interrupt_self(sig: signal.Signals = signal.SIGTERM) -> None:
    """Send ``sig`` to this process and give its handler the chance to run (a wait that a raise cuts short)."""
    os.kill(os.getpid(), sig)
    for _ in range(100):
        time.sleep(0.01)


# --- in this process -------------------------------------------------------------------------------------------------

def test_a_request_inside_an_interruptible_part_raises_at_once_and_handlers_are_restored() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with stop_requests(), pytest.raises(StopRequested, match="stopped by SIGTERM") as stop, interruptible():
        interrupt_self()
        pytest.fail("the wait was not cut short")
    assert stop.value.signum == signal.SIGTERM and isinstance(stop.value, KeyboardInterrupt)
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_request_during_a_write_waits_for_the_next_interruptible_part() -> None:
    written = []
    with stop_requests():
        interrupt_self(signal.SIGINT)  # arrives while "writing"
        written.append("episode")  # the write goes on
        with pytest.raises(StopRequested, match="SIGINT"), interruptible():
            pytest.fail("a request made before an interruptible part raises on entering it")
    assert written == ["episode"]


def test_a_request_after_the_last_interruptible_part_is_raised_on_leaving() -> None:
    with pytest.raises(StopRequested, match="SIGTERM"), stop_requests():
        interrupt_self()


def test_a_second_request_while_stopping_is_reported_and_the_stop_path_runs_on(capfd: pytest.CaptureFixture) -> None:
    cleaned = []
    with stop_requests():
        with pytest.raises(StopRequested), interruptible():
            interrupt_self(signal.SIGINT)
        interrupt_self(signal.SIGINT)  # a second Ctrl-C during the clean-up
        cleaned.append(True)
    assert cleaned and "SIGINT: already stopping" in capfd.readouterr().err


def test_a_stopped_recording_in_this_process_keeps_what_the_caller_took(tmp_path: Path) -> None:
    """Recording in this process (one robot): a stop during the caller's write of episode 1 lets it finish; the next
    episode is not started, and the error says so."""
    committed = []
    with pytest.raises(StopRequested, match=r"seeds 2–2 were in flight and are not kept; everything already stored "
                                            r"is kept: run again with resume=true"):
        for seed, _ in seed_ordered(ClosingJob(str(tmp_path), seconds=0.0), 0, 1):
            if seed == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # during the write of episode 1
            committed.append(seed)
    assert committed == [0, 1] and (tmp_path / f"closed-{os.getpid()}").exists()  # the env was closed


def test_the_parent_watchdog_ends_a_worker_whose_parent_is_gone() -> None:
    """Where the kernel has no parent-death signal, a thread watches the parent: a worker told its parent is a
    process that is not (gone, as it would be after a SIGKILL) exits at once."""
    code = "import os\nfrom s2robot.common.stop import _watch_parent\n_watch_parent(os.getppid() + 1)\n"
    done = subprocess.run([sys.executable, "-c", code], timeout=STOP_BOUND_S, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr


# --- child processes -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_recording_closes_every_worker_env_and_exits_by_the_signal(tmp_path: Path, sig: signal.Signals
                                                                                ) -> None:
    """SIGTERM or Ctrl-C to a recorder with 2 workers mid-episode: each worker closes its env (an arm env stops its
    arm there) and exits, and the recorder exits by the signal within seconds, naming what was kept."""
    child = Child(POOL, str(TESTS), str(tmp_path), "0")
    try:
        workers = [int(child.wait_for("running ").split()[1]) for _ in range(2)]
        below = descendants(child.proc.pid)
        rc, took = child.stop(sig)
        assert rc == -sig, f"exit code {rc} after {took:.0f} s:\n{child.stderr()}"
        assert re.search(rf"stopped: stopped by {sig.name}: the episodes of seeds 0–3 were in flight and are not kept; "
                         "everything already stored is kept", child.stderr())
        assert {p.name for p in tmp_path.glob("closed-*")} == {f"closed-{w}" for w in workers}
        assert wait_gone(below, 5) == []
    finally:
        child.kill()


def test_a_second_ctrl_c_while_stopping_lets_the_workers_close_and_leaves_none(tmp_path: Path) -> None:
    """Ctrl-C, and again while the workers close their envs (each takes 1 s): reported, the envs close, the recorder
    exits by SIGINT, no worker is left."""
    child = Child(POOL, str(TESTS), str(tmp_path), "1")
    try:
        workers = [int(child.wait_for("running ").split()[1]) for _ in range(2)]
        below = descendants(child.proc.pid)
        child.proc.send_signal(signal.SIGINT)
        give_up = time.monotonic() + STOP_BOUND_S
        while not list(tmp_path.glob("closing-*")) and time.monotonic() < give_up:  # the stop path runs
            time.sleep(0.01)
        rc, took = child.stop(signal.SIGINT)
        assert rc == -signal.SIGINT, f"exit code {rc} after {took:.0f} s:\n{child.stderr()}"
        assert "SIGINT: already stopping" in child.stderr()
        assert {p.name for p in tmp_path.glob("closed-*")} == {f"closed-{w}" for w in workers}
        assert wait_gone(below, 5) == []
    finally:
        child.kill()


def test_env_workers_die_with_a_killed_evaluation() -> None:
    """SIGKILL of an evaluating process (nothing in it can run) leaves none of its env workers running."""
    assert_workers_die_with_a_killed_evaluation("sim")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_evaluation_says_so_writes_no_results_and_leaves_no_worker(checkpoint: Path, tmp_path: Path,
                                                                              sig: signal.Signals) -> None:
    """scripts/eval.py with 2 env workers, stopped mid-episode: its message, its exit by the signal within seconds,
    no results.json, no process left."""
    child = Child(eval_script(checkpoint, tmp_path / "eval"))
    try:
        child.wait_for("stepping")
        below = descendants(child.proc.pid)
        rc, took = child.stop(sig)
        assert rc == -sig, f"exit code {rc} after {took:.0f} s:\n{child.stderr()}"
        assert re.search(rf"stopped: stopped by {sig.name}: \d of 4 episodes had finished \(their waves are recorded: "
                         r"the same command goes on from them\); the episodes in flight were ended", child.stderr())
        assert not (tmp_path / "eval" / "results.json").exists()
        assert wait_gone(below, 5) == []
    finally:
        child.kill()


def test_a_stopped_recording_keeps_every_committed_episode(tmp_path: Path) -> None:
    """scripts/record_demos.py with 2 workers, SIGTERMed once episodes are stored: it exits by the signal, and the store
    opens for appending with every committed episode and nothing half-written to repair."""
    out = tmp_path / "demos.zarr"
    argv = ["scripts/record_demos.py", f"out={out}", "n_episodes=200", "workers=2", "env.image_size=32"]
    child = Child(f"import runpy, sys\nsys.argv = {argv!r}\nrunpy.run_path('scripts/record_demos.py', "
                  "run_name='__main__')\n")
    try:
        give_up, stored = time.monotonic() + START_LIMIT_S, 0
        while stored < 1:
            assert child.proc.poll() is None and time.monotonic() < give_up, child.stderr()
            time.sleep(0.2)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a read during an append sees it unfinished
                    stored = EpisodeStore.open(out).n_episodes
            except (OSError, ValueError, KeyError):  # not created yet
                pass
        below = descendants(child.proc.pid)
        rc, took = child.stop(signal.SIGTERM)
        assert rc == -signal.SIGTERM, f"exit code {rc} after {took:.0f} s:\n{child.stderr()}"
        assert "everything already stored is kept: run again with resume=true" in child.stderr()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an interrupted append would be repaired with a warning
            store = EpisodeStore.open(out, mode="a")
        assert store.n_episodes >= stored and len(store.attrs["attempts"]) >= store.n_episodes
        assert wait_gone(below, 5) == []
    finally:
        child.kill()
