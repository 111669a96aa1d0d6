"""One seed-ordered worker pool: episodes ``first_seed, first_seed + 1, ...`` run in worker processes, results
come back in seed order, so what a caller stores does not depend on the number of workers.

Recording demos (``workflows.record``) and rendering frames (``sim.frames``) use it. Evaluation steps its envs in
lock-step instead (``sim.rollout``: a vector env, so the encoder runs once per step over every env).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
import sys
from collections.abc import Iterator
from typing import Any, Protocol

PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_S = 1.0  # how often the parent checks that its workers are alive while it waits for a result


class EpisodeJob(Protocol):
    """What workers run (picklable: it crosses into spawned processes)."""

    def setup(self) -> Any:
        """Per-worker state, e.g. an env (built once per worker)."""

    def run(self, state: Any, seed: int) -> Any:
        """The result of the episode with ``seed``."""

    def close(self, state: Any) -> None:
        """Release the state (e.g. close the env)."""


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op), so a recorder
    killed with SIGKILL leaves no workers blocked forever; exit at once if the parent is already gone. A no-op
    when called in the parent itself (gymnasium builds one env there to read its spaces)."""
    if os.getpid() == parent_pid:
        return
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def _worker(job: EpisodeJob, tasks: mp.Queue, results: mp.Queue, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    state = None
    try:
        state = job.setup()
        while (seed := tasks.get()) is not None:
            results.put((seed, job.run(state, seed)))
    except BaseException as e:  # report, then die: the parent raises it
        results.put(e)
    finally:
        if state is not None:
            job.close(state)


def _in_process(job: EpisodeJob, first_seed: int) -> Iterator[tuple[int, Any]]:
    state = job.setup()
    try:
        seed = first_seed
        while True:
            yield seed, job.run(state, seed)
            seed += 1
    finally:
        job.close(state)


def _next_result(results: mp.Queue, procs: list, in_flight: range) -> Any:
    """The next result. A worker that died (killed, out of memory) is reported within ``POLL_S`` seconds, also
    while the others keep delivering, instead of leaving the caller waiting forever for its episode; a worker
    that failed with an exception put it on the queue before exiting, and that exception is returned instead."""
    while True:
        try:
            item = results.get(timeout=POLL_S)
        except queue.Empty:
            item = None
        dead = [p for p in procs if p.exitcode is not None]
        if not dead:
            if item is not None:
                return item
            continue
        while not isinstance(item, BaseException):
            try:
                item = results.get(timeout=0.5)
            except queue.Empty:
                raise RuntimeError(
                    f"worker process {dead[0].pid} died (exit code {dead[0].exitcode}) while the episodes of seeds "
                    f"{in_flight.start}–{in_flight.stop - 1} were in flight; everything already stored is kept: run "
                    "again with resume=true") from None
        return item


def seed_ordered(job: EpisodeJob, first_seed: int, workers: int) -> Iterator[tuple[int, Any]]:
    """(seed, result) for seeds first_seed, first_seed + 1, ... in order, without end: the caller stops.

    workers ≤ 1 runs in this process; otherwise ``workers`` spawned processes (fresh interpreters: no inherited
    GL or thread state) keep 2 episodes each in flight. Closing the generator stops the workers.
    """
    if workers <= 1:
        yield from _in_process(job, first_seed)
        return
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(job, tasks, results, os.getpid()), daemon=True)
             for _ in range(workers)]
    for p in procs:
        p.start()
    next_seed, want, done = first_seed, first_seed, {}
    for _ in range(2 * workers):
        tasks.put(next_seed)
        next_seed += 1
    try:
        while True:
            item = _next_result(results, procs, range(want, next_seed))
            if isinstance(item, BaseException):
                raise RuntimeError(f"a worker failed: {item!r}") from item
            done[item[0]] = item[1]
            tasks.put(next_seed)
            next_seed += 1
            while want in done:
                yield want, done.pop(want)
                want += 1
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.join(timeout=5)
