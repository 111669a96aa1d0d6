"""One writer at a time: an exclusive lock held for a writer's lifetime (demo stores, feature caches, run dirs).

Without it, two recorders resuming the same store at once interleave their appends and leave episodes that do
not match their digests. ``writer_lock(path)`` takes an ``fcntl`` lock on ``<path>.lock``, ``path`` resolved
first so that a store named through a symlink is the same store: the OS drops it when the holder exits, is killed
or crashes, so a lock left by a dead process is taken over at once. A holder that ends normally removes the file.
The file also holds who has the lock (pid, host, command, start time) for the message a second writer gets. Locks
are advisory and local: they keep s2robot's own writers apart on one machine (or one filesystem that supports
``flock``), not other programs.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_path(path: str | Path) -> Path:
    """The lock file of ``path``: ``<resolved path>.lock`` beside it (a store's own folder stays zarr's alone).

    The path is resolved first (symlinks, ``..``, relative to the working directory), so every name of one store
    (a symlink to it, a path through a linked folder) shares one lock.
    """
    path = Path(path).resolve()
    return path.with_name(path.name + ".lock")


def holder(path: str | Path) -> dict:
    """Who holds (or last held) the lock of ``path``: ``{pid, host, command, since}``; {} when unknown."""
    try:
        return json.loads(lock_path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def writer_lock(path: str | Path, what: str = "store") -> Iterator[None]:
    """Hold the exclusive writer lock of ``path`` (a ``what``, for messages) for the ``with`` block.

    Raises ``RuntimeError`` naming ``path`` as given and the holder's pid, host and command when another live process
    holds the lock of the store ``path`` resolves to.
    """
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, path, what)
    try:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300],
              "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        lock.unlink(missing_ok=True)  # still holding the lock: a waiter re-checks the inode (see _acquire)
        os.close(fd)  # closing the descriptor releases the lock


class LockedError(RuntimeError):
    """Another process holds the writer lock of a store, cache or run."""


def _acquire(lock: Path, path: str | Path, what: str) -> int:
    """A descriptor of ``lock`` holding its exclusive flock. A file unlinked by its previous holder between our
    open and our flock is not the lock any more: then open the new one and try again."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = holder(path)
            raise LockedError(
                f"{what} {path} is being written by another process (pid {h.get('pid', '?')} on host "
                f"{h.get('host', '?')}, since {h.get('since', '?')}: {h.get('command', '?')}). Wait for it to "
                f"finish or stop it; one writer at a time keeps the {what} consistent") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
