"""One seed-ordered worker pool: episodes ``first_seed, first_seed + 1, ...`` run in worker processes, results
come back in seed order, so what a caller stores does not depend on the number of workers.

Recording demos (``workflows.record``) and rendering frames (``sim.frames``) use it. Evaluation steps its envs in
lock-step instead (``sim.rollout``: a vector env, so the encoder runs once per step over every env).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from typing import Any, Protocol


class EpisodeJob(Protocol):
    """What workers run (picklable: it crosses into spawned processes)."""

    def setup(self) -> Any:
        """Per-worker state, e.g. an env (built once per worker)."""

    def run(self, state: Any, seed: int) -> Any:
        """The result of the episode with ``seed``."""

    def close(self, state: Any) -> None:
        """Release the state (e.g. close the env)."""


def _worker(job: EpisodeJob, tasks: mp.Queue, results: mp.Queue) -> None:
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
    procs = [ctx.Process(target=_worker, args=(job, tasks, results), daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    next_seed, want, done = first_seed, first_seed, {}
    for _ in range(2 * workers):
        tasks.put(next_seed)
        next_seed += 1
    try:
        while True:
            item = results.get()
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
