"""How many CPU threads torch runs in a process, resolved once per stage with a printed reason.

torch's default is one thread per core. Beside a robot's side on the same cores (the franky-sim rehearsal's physics
thread, or franky's 1 kHz control thread on a real arm) that starves the robot: on the 2-core EPYC, torch's 2 threads
beside franky-sim's physics stretched one evaluation episode of ≤ 10 s robot time to ~390 s of wall time. ``auto``
therefore keeps at least one core for the robot when one runs beside; otherwise torch keeps its own count (a thread
per core, or ``OMP_NUM_THREADS``). Worker processes (env and recording workers) run 1 thread each: they never run
torch's heavy ops, and they share the cores with their siblings and their parent (``worker_threads``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

AUTO = "auto"
WORKER_THREADS = 1  # torch/OpenMP threads of every spawned env or recording worker
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # read by OpenMP and MKL when a process starts


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_threads(threads: str) -> str:
    """``auto`` or a whole number ≥ 1 (as text: hydra gives ``threads=2`` as "2"); ValueError otherwise."""
    if threads != AUTO and not (str(threads).isdigit() and int(threads) >= 1):
        raise ValueError(f"threads must be 'auto' or a whole number ≥ 1 (torch's CPU threads), got {threads!r}")
    return str(threads)


def resolve_threads(threads: str, cores: int, beside: str | None = None, default: int | None = None
                    ) -> tuple[int, str]:
    """(torch threads, the reason in words). threads: ``auto`` or a number; cores: the CPU cores there are; beside:
    what runs on the same cores and needs one of them (``"franky-sim's physics"``), or None; default: torch's own
    count (``OMP_NUM_THREADS``, or torchrun's 1 per process; None: ``cores``).

    ``auto`` = torch's own count, less what leaves ``beside`` a core of its own (never below 1); a number is taken as
    given.
    """
    check_threads(threads)
    if threads != AUTO:
        return int(threads), f"torch threads {threads} of {cores} cores (as set)"
    own = cores if default is None else default
    if beside is None:
        return own, f"torch threads {own} of {cores} cores"
    n = max(1, min(own, cores - 1))
    kept = "none left" if n == cores else f"{cores - n} kept"
    return n, f"torch threads {n} of {cores} cores: {kept} for {beside}"


@functools.cache
def _report(line: str) -> None:
    print(line)  # once per process and distinct choice


def set_threads(threads: str = AUTO, beside: str | None = None) -> int:
    """Resolve (``resolve_threads`` on this process's cores), set torch's intra-op threads, print the choice once;
    returns the count."""
    import torch

    n, reason = resolve_threads(threads, cpu_cores(), beside, torch.get_num_threads())
    torch.set_num_threads(n)
    _report(reason)
    return n


@contextmanager
def worker_threads() -> Iterator[None]:
    """Within: processes started here run ``WORKER_THREADS`` OpenMP/MKL threads (a spawned process reads them from
    its environment when it starts); this process's own threads are unchanged (torch read them at its start, or
    ``set_threads`` set them)."""
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    os.environ.update({k: str(WORKER_THREADS) for k in THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
