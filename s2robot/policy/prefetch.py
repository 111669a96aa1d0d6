"""Background inference for real-time control: the next action chunk is predicted while the current one executes.

``PrefetchingPolicy`` wraps a receding-horizon ``ChunkTransformerPolicy``. Every control step it appends the
observation to the policy's history (so the history is exactly the synchronous one) and hands out the next queued
action. When ``prefetch`` actions are left, it starts predicting the next chunk from the current window in a worker
thread. When the queue runs out, ``k = prefetch + 1`` control steps have passed since that chunk's observation, so
its first ``k`` actions are stale and dropped, as Diffusion Policy's real-robot runner does, and the next
``execute_steps`` replace the queue. Only if the chunk is not ready by then does a step wait for it (counted in
``stats["waits"]``). Every executed action is the one its chunk planned for that very step (tested); the price is a
plan from an observation ``prefetch + 1`` steps old instead of the current one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch


class PrefetchingPolicy:
    """``reset``/``act`` like the wrapped policy; predict_chunk runs in the background (see the module docstring).

    policy: a ``ChunkTransformerPolicy`` with ``execution="receding"``; prefetch: start the next prediction when this
    many queued actions are left (≥ 1, and prefetch + 1 + execute_steps ≤ t_act); executor: where predictions run
    (a one-thread pool by default; tests pass one they control).
    """

    def __init__(self, policy: Any, prefetch: int = 2, executor: Executor | None = None) -> None:
        if policy.cfg.execution != "receding":
            raise ValueError(f"background inference needs execution=receding, got {policy.cfg.execution!r}")
        c = policy.cfg
        if not (1 <= prefetch < c.execute_steps and prefetch + 1 + c.execute_steps <= c.t_act):
            raise ValueError(f"prefetch must be ≥ 1, < execute_steps ({c.execute_steps}) and leave execute_steps "
                             f"actions of the t_act={c.t_act} chunk after the prefetch + 1 stale ones, got {prefetch}")
        self.policy, self.prefetch = policy, prefetch
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-prefetch")
        self.stats = {"chunks": 0, "waits": 0, "dropped": 0}  # over every episode run
        self.reset()

    # the attributes the rollout reads, passed through
    @property
    def feature_keys(self) -> tuple[str, ...]:
        return self.policy.feature_keys

    @property
    def action_space(self) -> str:
        return self.policy.action_space

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.policy.parameters()

    def reset(self, batch_size: int = 1) -> None:
        self.policy.reset(batch_size)
        self._queue: list[torch.Tensor] = []  # (B, A) actions still to execute
        self._pending: tuple[int, Future] | None = None  # (step of its observation, future chunk (B, Ta, A))
        self._t = 0

    @torch.no_grad()
    def act(self, obs: Mapping[str, torch.Tensor | np.ndarray]) -> torch.Tensor:
        """One control step: obs → action (B, A), raw units, as ``ChunkTransformerPolicy.act``."""
        p, t, steps = self.policy, self._t, self.policy.cfg.execute_steps
        window = p._push(obs)  # the history advances every step, exactly as in the synchronous policy
        if not self._queue:
            if self._pending is None:  # an episode's first step: nothing to execute yet, so predict now
                start, chunk = t, p.predict_chunk(window)
            else:  # the chunk predicted in the background (waiting for it only if it is late)
                (start, future), self._pending = self._pending, None
                self.stats["waits"] += int(not future.done())
                chunk = future.result()  # (B, Ta, A), planned from the observation of step `start`
            stale = t - start  # its actions for steps start … t-1 have passed: dropped
            self._queue = list(chunk[:, stale: stale + steps].unbind(1))
            self.stats["chunks"] += 1
            self.stats["dropped"] += stale
        action = self._queue.pop(0)
        if self._pending is None and len(self._queue) == self.prefetch:  # start planning the next chunk now
            snapshot = {k: v.clone() for k, v in window.items()}
            self._pending = (t, self.executor.submit(p.predict_chunk, snapshot))
        p._last_action = action
        p._t += 1
        self._t += 1
        return action
