"""One seed-ordered worker pool: episodes ``first_seed, first_seed + 1, ...`` run in worker processes, results
come back in seed order, so what a caller stores does not depend on the number of workers.

Recording demos (``workflows.record``) and rendering frames (``sim.frames``) use it. Evaluation steps its envs in
lock-step instead (``sim.rollout``: a vector env, so the encoder runs once per step over every env).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections.abc import Iterator
from typing import Any, Protocol

from s2robot.common.stop import StopRequested, end_processes, interruptible, stop_requests, worker_signals
from s2robot.common.threads import worker_threads

POLL_S = 1.0  # how often the parent checks that its workers are alive while it waits for a result


class EpisodeJob(Protocol):
    """What workers run (picklable: it crosses into spawned processes)."""

    def setup(self) -> Any:
        """Per-worker state, e.g. an env (built once per worker)."""

    def run(self, state: Any, seed: int) -> Any:
        """The result of the episode with ``seed``."""

    def close(self, state: Any) -> None:
        """Release the state (e.g. close the env)."""


def _worker(job: EpisodeJob, tasks: mp.Queue, results: mp.Queue, parent_pid: int) -> None:
    worker_signals(parent_pid)  # dies with the parent; SIGTERM (the parent stopping the pool) raises StopRequested
    state = None
    try:
        state = job.setup()
        while (seed := tasks.get()) is not None:
            results.put((seed, job.run(state, seed)))
    except StopRequested:
        results.cancel_join_thread()  # nobody reads on: exit without flushing results into the pipe
    except BaseException as e:  # report, then die: the parent raises it
        results.put(e)
    finally:
        if state is not None:
            job.close(state)  # closes the env: an arm env stops its arm


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
    GL or thread state; 1 torch/OpenMP thread each, ``common.threads.worker_threads``) keep 2 episodes each in
    flight. Closing the generator stops the workers. SIGTERM or Ctrl-C
    meanwhile (``common.stop``) raises ``StopRequested`` here once the caller's handling of the last result is done:
    the episodes in flight end unkept, the workers close their envs (an arm stops) and exit, every result already
    handed out stays with the caller.
    """
    with stop_requests():
        if workers <= 1:
            yield from _in_process(job, first_seed)
        else:
            yield from _in_workers(job, first_seed, workers)


def _stopped(stop: StopRequested, in_flight: range) -> StopRequested:
    return StopRequested(stop.signum, f"{stop}: the episodes of seeds {in_flight.start}–{in_flight.stop - 1} were in "
                                      "flight and are not kept; everything already stored is kept: run again with "
                                      "resume=true to go on")


def _in_process(job: EpisodeJob, first_seed: int) -> Iterator[tuple[int, Any]]:
    state = job.setup()
    try:
        seed = first_seed
        while True:
            try:
                with interruptible():  # a stop ends the episode (an arm env stops its arm), never the caller's write
                    result = job.run(state, seed)
            except StopRequested as stop:
                raise _stopped(stop, range(seed, seed + 1)) from None
            yield seed, result
            seed += 1
    finally:
        job.close(state)


def _in_workers(job: EpisodeJob, first_seed: int, workers: int) -> Iterator[tuple[int, Any]]:
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    procs: list = []
    next_seed, want, done = first_seed, first_seed, {}
    try:
        with worker_threads():  # the workers share the cores: 1 torch/OpenMP thread each
            for _ in range(workers):
                procs.append(ctx.Process(target=_worker, args=(job, tasks, results, os.getpid()), daemon=True))
                procs[-1].start()
        for _ in range(2 * workers):
            tasks.put(next_seed)
            next_seed += 1
        while True:
            try:
                with interruptible():
                    item = _next_result(results, procs, range(want, next_seed))
            except StopRequested as stop:
                raise _stopped(stop, range(want, next_seed)) from None
            if isinstance(item, BaseException):
                raise RuntimeError(f"a worker failed: {item!r}") from item
            done[item[0]] = item[1]
            tasks.put(next_seed)
            next_seed += 1
            while want in done:
                yield want, done.pop(want)
                want += 1
    finally:
        end_processes(procs)  # SIGTERM: each worker closes its env; SIGKILL after a grace
