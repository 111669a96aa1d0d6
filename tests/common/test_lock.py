"""Writer locks: a second writer is refused naming the holder; a dead holder's lock is taken over."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_demos

from s2robot.common.lock import holder, lock_path, writer_lock
from s2robot.data.store import EpisodeStore
from s2robot.sim.env import EnvConfig
from s2robot.workflows.record import RecordConfig, record_demos

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from s2robot.common.lock import writer_lock
with writer_lock(sys.argv[1]):
    print("ready", flush=True)
    time.sleep(60)
"""


def test_second_writer_is_refused_with_the_holder(tmp_path: Path) -> None:
    target = tmp_path / "d.zarr"
    with writer_lock(target):
        assert holder(target)["pid"] == os.getpid() and lock_path(target) == tmp_path / "d.zarr.lock"
        with pytest.raises(RuntimeError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"):
            with writer_lock(target):
                pass
    with writer_lock(target):  # released at the end of the block
        pass
    assert not lock_path(target).exists()  # and the file removed: no litter beside the store


def test_concurrent_recorder_refused_and_dead_holder_taken_over(tmp_path: Path) -> None:
    """A recorder resuming a store another live process writes is refused before touching it (two recorders
    at once interleave their appends and break digests); once that process is SIGKILLed its lock is free."""
    demos = make_demos(tmp_path / "d.zarr")
    before = EpisodeStore.open(demos).fingerprint
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(demos)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        cfg = RecordConfig(env=EnvConfig(image_size=32, max_steps=40), out=str(demos), n_episodes=5, workers=1,
                           resume=True)
        with pytest.raises(RuntimeError, match=rf"being written by another process \(pid {proc.pid}"):
            record_demos(cfg, progress=False)
        assert EpisodeStore.open(demos).fingerprint == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with writer_lock(demos):  # the dead holder's lock is taken over at once
        assert holder(demos)["pid"] == os.getpid()


def test_a_store_reached_through_a_symlink_is_the_same_store(tmp_path: Path) -> None:
    """The lock is the resolved path's: a writer holding the store by its real name refuses a second writer that
    names it through a symlink (another process here, as two recorders would be), and the message names the path
    that second writer was given."""
    real = tmp_path / "stores" / "d.zarr"
    real.mkdir(parents=True)
    alias = tmp_path / "alias.zarr"
    alias.symlink_to(real, target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(real)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert lock_path(alias) == lock_path(real) == real.with_name("d.zarr.lock")
        assert holder(alias)["pid"] == proc.pid
        refused = rf"store {re.escape(str(alias))} is being written by another process \(pid {proc.pid}"
        with pytest.raises(RuntimeError, match=refused):
            with writer_lock(alias):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with writer_lock(alias):  # and through the link once the holder is gone, beside the real store
        assert (real.parent / "d.zarr.lock").exists() and not (tmp_path / "alias.zarr.lock").exists()
