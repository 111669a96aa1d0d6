"""Stop requests and worker lifetimes: SIGTERM or Ctrl-C (SIGINT) ends a long run cleanly, and no worker process
outlives the process that started it.

The process that runs episodes (an evaluation, a recording) holds ``stop_requests()`` while it runs them: the first
SIGTERM or SIGINT is recorded, and raises ``StopRequested`` where the main thread may be cut short (``interruptible``:
waiting for workers, stepping an episode), or at the next such place (never halfway through writing an episode). The
caller's stop path then ends the episodes in flight (an arm env stops its arm on any exception inside a step), closes
its workers (``end_processes``: SIGTERM, a short grace to close their envs, then SIGKILL) and re-raises; later requests
meanwhile are reported, not acted on, so the stop path runs to its end (a few seconds). A script's ``exit_on_stop``
prints the stop's message and ends the process by the same signal (what a shell expects of an interrupted command).

Workers call ``worker_signals`` first: the kernel SIGKILLs them when their parent dies (Linux's PR_SET_PDEATHSIG: also
after a SIGKILL of the parent, which nothing in it can handle), a terminal's Ctrl-C is left to the parent (which
stops them), and SIGTERM raises ``StopRequested`` in them, so their env closes (stopping its arm) before they exit.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_S = 5.0  # how long a stopped worker may take to close its env (stop its arm) before it is killed [s]


class StopRequested(KeyboardInterrupt):
    """A stop was requested by ``signum`` (SIGTERM or SIGINT). A KeyboardInterrupt, so everything that cleans up after
    Ctrl-C (an arm env's step stops the arm) does so after a SIGTERM too, and ``except Exception`` does not swallow it.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    def __reduce__(self) -> tuple[type, tuple[int, str]]:  # pickled by a worker's error report
        return type(self), (self.signum, str(self))


class _Requests:
    """This process's stop state: whether handlers are installed, the first request, interruptible depth."""

    installed = False  # inside stop_requests()
    signum: int | None = None  # the first request while installed
    raised = False  # whether StopRequested was raised for it
    interruptible = 0  # nesting depth of interruptible()


def _handle(signum: int, frame: Any) -> None:
    if _Requests.signum is not None:  # a second request while the stop path runs: let it finish
        print(f"{signal.Signals(signum).name}: already stopping (ending the episodes, stopping the arms, closing the "
              f"workers: a few seconds)", file=sys.stderr, flush=True)
        return
    _Requests.signum = signum
    if _Requests.interruptible:
        _Requests.raised = True
        raise StopRequested(signum)


@contextmanager
def stop_requests() -> Iterator[None]:
    """While inside, SIGTERM and SIGINT request a stop instead of killing or interrupting at once (see the module).
    A request that nothing inside raised (it came after the last interruptible part) is raised on leaving. A nested
    use shares the outer one; outside the main thread (where handlers cannot be set) this does nothing."""
    if _Requests.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handle) for s in STOP_SIGNALS}
    _Requests.installed, _Requests.signum, _Requests.raised = True, None, False
    pending = None
    try:
        yield
        pending = None if _Requests.raised else _Requests.signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _Requests.installed, _Requests.signum, _Requests.raised = False, None, False
    if pending is not None:
        raise StopRequested(pending)


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside, a stop request raises ``StopRequested`` at once; one made before raises on entry. Around what may be
    cut short (a wait for workers, an episode), never around a write."""
    check_stop()
    _Requests.interruptible += 1
    try:
        yield
    finally:
        _Requests.interruptible -= 1


def check_stop() -> None:
    """Raise ``StopRequested`` when a stop was requested (held by ``stop_requests``) and not yet raised here."""
    if _Requests.signum is not None and not _Requests.raised and not _Requests.interruptible:
        _Requests.raised = True
        raise StopRequested(_Requests.signum)


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux's PR_SET_PDEATHSIG; the "parent" is the
    thread that started this process, so start workers from a thread that outlives them), so a parent killed with
    SIGKILL leaves no workers behind; elsewhere a daemon thread checks the parent every second instead. Exit at once if
    the parent is already gone. A no-op when called in the parent itself (gymnasium builds one env there to read its
    spaces)."""
    if os.getpid() == parent_pid:
        return
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent watchdog", daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:  # an orphan is re-parented (to init or a subreaper)
        time.sleep(1.0)
    os._exit(1)


def _worker_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the stop path must not be cut by a second one
    raise StopRequested(signum, "the parent stopped this worker")


def worker_signals(parent_pid: int) -> None:
    """Set up a worker process of ``parent_pid`` (first thing in it): it dies with its parent (``die_with_parent``),
    ignores SIGINT (a terminal's Ctrl-C reaches the whole process group; the parent decides and stops its workers),
    and turns SIGTERM into ``StopRequested`` so its env is closed on the way out. A no-op in the parent itself."""
    if os.getpid() == parent_pid:
        return
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)


def end_processes(procs: Sequence[Any], grace_s: float = GRACE_S) -> None:
    """Stop ``multiprocessing`` processes: SIGTERM (a worker of ``worker_signals`` closes its env, stopping its arm),
    up to ``grace_s`` [s] for all of them to exit, then SIGKILL for any still running. Returns when all are reaped."""
    for p in procs:
        if p.exitcode is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.exitcode is None:
            p.kill()
            p.join(timeout=10)  # a SIGKILLed process is reaped at once; a loaded machine can take seconds


def exit_on_stop(main: Callable[[], object]) -> None:
    """Run a script's ``main``; a ``StopRequested`` out of it prints its message (no traceback) and ends the process
    by its signal, so a shell sees an interrupted command (and a loop over commands stops too)."""
    try:
        main()
    except StopRequested as stop:
        _exit_by(stop)


def _exit_by(stop: StopRequested) -> NoReturn:
    print(f"stopped: {stop}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    signal.signal(stop.signum, signal.SIG_DFL)
    os.kill(os.getpid(), stop.signum)
    time.sleep(1.0)  # the signal ends the process; this only covers its delivery
    sys.exit(128 + stop.signum)
