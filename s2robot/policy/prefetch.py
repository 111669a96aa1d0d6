"""Background inference for real-time control: the next action chunk is predicted, and with an ``encoder`` every
frame encoded, while the arm executes the current chunk.

``PrefetchingPolicy`` wraps a receding-horizon ``ChunkTransformerPolicy``. Every control step it hands out the next
queued action, and the step's observation joins the policy's history in the same order as synchronously (so the
history is exactly the synchronous one). When ``prefetch`` actions are left, it starts predicting the next chunk
from the window of the current step in a worker thread. When the queue runs out, ``k = prefetch + 1`` control steps
have passed since that chunk's observation, so its first ``k`` actions are stale and dropped, as Diffusion Policy's
real-robot runner does, and the next ``execute_steps`` replace the queue. Only if the chunk is not ready by then does
a step wait for it (counted in ``stats["waits"]``). Every executed action is the one its chunk planned for that very
step (tested); the price is a plan from an observation ``prefetch + 1`` steps old instead of the current one.

With an ``encoder``, the frames are encoded in the same worker thread too: the rollout is given ``relay`` as its
encoder (``policy.remote.FrameRelay``: the frames pass through unencoded), and each step's frames are encoded, pushed
into the history and (at a planning step) planned from there, one step after another in step order, while the main
thread sends the step's action and the arm executes it. A step's observation then costs the control loop a copy,
not an encoder pass; only an episode's first step (nothing queued yet) encodes and predicts before it acts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from s2robot.data.keys import feat_cameras, feat_key
from s2robot.policy.remote import FrameRelay


class PrefetchingPolicy:
    """``reset``/``act`` like the wrapped policy; predict_chunk (and the encoder) run in the background (see the
    module docstring).

    policy: a ``ChunkTransformerPolicy`` with ``execution="receding"``; prefetch: start the next prediction when this
    many queued actions are left (≥ 1, and prefetch + 1 + execute_steps ≤ t_act); executor: where predictions run
    (a one-thread pool by default; tests pass one they control); encoder: frames (N, H, W, 3) uint8 → features
    (N, F), run in the background on the frames ``relay`` passes through (None: ``act`` gets features).
    ``close`` (or leaving a ``with`` block) ends the worker thread once its running step is done.
    """

    def __init__(self, policy: Any, prefetch: int = 2, executor: Executor | None = None, encoder: Any = None
                 ) -> None:
        if policy.cfg.execution != "receding":
            raise ValueError(f"background inference needs execution=receding, got {policy.cfg.execution!r}")
        c = policy.cfg
        if not (1 <= prefetch < c.execute_steps and prefetch + 1 + c.execute_steps <= c.t_act):
            raise ValueError(f"prefetch must be ≥ 1, < execute_steps ({c.execute_steps}) and leave execute_steps "
                             f"actions of the t_act={c.t_act} chunk after the prefetch + 1 stale ones, got {prefetch}")
        self.policy, self.prefetch, self.encoder = policy, prefetch, encoder
        self.relay = FrameRelay(encoder.describe()) if encoder is not None else None
        self._owns_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-prefetch")
        self.stats = {"chunks": 0, "waits": 0, "dropped": 0}  # over every episode run
        self._jobs: list[Future] = []  # background steps (encoder mode), oldest first
        self._queue: list[torch.Tensor] = []
        self._pending: tuple[int, Future] | None = None
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
        self._drain()  # the previous episode's background steps end before its history is forgotten
        self.policy.reset(batch_size)
        self._queue = []  # (B, A) actions still to execute
        self._pending = None  # (step of its observation, future chunk (B, Ta, A))
        self._t = 0
        self._last: torch.Tensor | None = None  # the action executed at the previous step (encoder mode)

    @torch.no_grad()
    def act(self, obs: Mapping[str, torch.Tensor | np.ndarray]) -> torch.Tensor:
        """One control step: obs → action (B, A), raw units, as ``ChunkTransformerPolicy.act``. With an encoder, obs
        holds ``relay``'s frame rows under the feature keys instead of features."""
        if self.encoder is None:
            return self._act_on_features(obs)
        return self._act_on_frames(obs)

    # ------------------------------------------------------------------------------------------- features given
    def _act_on_features(self, obs: Mapping[str, torch.Tensor | np.ndarray]) -> torch.Tensor:
        p, t = self.policy, self._t
        window = p._push(obs)  # the history advances every step, exactly as in the synchronous policy
        if not self._queue:
            if self._pending is None:  # an episode's first step: nothing to execute yet, so predict now
                self._fill(t, t, p.predict_chunk(window))
            else:
                self._take_pending(t)
        action = self._queue.pop(0)
        if self._pending is None and len(self._queue) == self.prefetch:  # start planning the next chunk now
            snapshot = {k: v.clone() for k, v in window.items()}
            self._pending = (t, self.executor.submit(p.predict_chunk, snapshot))
        p._last_action = action
        p._t += 1
        self._t += 1
        return action

    # ------------------------------------------------------------------------------------------- frames given
    def _act_on_frames(self, obs: Mapping[str, torch.Tensor | np.ndarray]) -> torch.Tensor:
        t = self._t
        self._raise_failed()
        step = {k: (v.clone() if isinstance(v, torch.Tensor) else np.array(v)) for k, v in obs.items()}
        if not self._queue and self._pending is None:  # an episode's first step: encode and predict now
            self._fill(t, t, self._ingest(step, self._last, plan=True))  # the worker is idle (reset drained it)
        else:
            if not self._queue:
                self._take_pending(t)
            plan = self._pending is None and len(self._queue) - 1 == self.prefetch
            job = self.executor.submit(self._ingest, step, self._last, plan)
            self._jobs.append(job)
            if plan:
                self._pending = (t, job)
        action = self._queue.pop(0)
        if self._pending is None and len(self._queue) == self.prefetch:  # planned from this step (first step only)
            self._pending = (t, self.executor.submit(self._plan_newest))
            self._jobs.append(self._pending[1])
        self._last = action
        self._t += 1
        return action

    def _ingest(self, step: Mapping[str, Any], last: torch.Tensor | None, plan: bool) -> torch.Tensor | None:
        """(Worker thread, one step after another in step order.) Encode the step's frames, push the step into the
        policy's history; at a planning step, return the chunk (B, Ta, A) planned from it."""
        p = self.policy
        feats = {}
        for cam in feat_cameras(p.feature_keys):
            rows = step[feat_key(cam)]  # (B, 1 + H·W·3) uint8, zero rows for slots not running
            side = math.isqrt((rows.shape[-1] - 1) // 3)
            running, frames = FrameRelay.split(rows, (side, side, 3))
            device = p.time_embed.device
            part = self.encoder(frames).to(device)  # (n running, F)
            if running.all():
                feats[feat_key(cam)] = part
            else:  # as sim.rollout.step_features: zeros for slots whose episode ended
                full = part.new_zeros((len(running), part.shape[1]))
                full[torch.as_tensor(np.flatnonzero(running), device=device)] = part
                feats[feat_key(cam)] = full
        p._last_action = last
        self._window = p._push({**feats, "proprio": step["proprio"]})
        p._t += 1
        return p.predict_chunk(self._window) if plan else None

    def _plan_newest(self) -> torch.Tensor:
        """(Worker thread.) The chunk planned from the newest step's window."""
        return self.policy.predict_chunk(self._window)

    # ------------------------------------------------------------------------------------------- both
    def _fill(self, t: int, start: int, chunk: torch.Tensor) -> None:
        """Queue the ``execute_steps`` actions of ``chunk`` (B, Ta, A), planned at step ``start``, from step ``t`` on:
        those for steps start … t-1 have passed and are dropped."""
        stale = t - start
        self._queue = list(chunk[:, stale: stale + self.policy.cfg.execute_steps].unbind(1))
        self.stats["chunks"] += 1
        self.stats["dropped"] += stale

    def _take_pending(self, t: int) -> None:
        """Queue the chunk predicted in the background, waiting for it only if it is late (counted)."""
        (start, future), self._pending = self._pending, None
        self.stats["waits"] += int(not future.done())
        self._fill(t, start, future.result())

    def _raise_failed(self) -> None:
        """Forget finished background steps; re-raise the error of one that failed (an encoder error surfaces at the
        next step)."""
        while self._jobs and self._jobs[0].done():
            self._jobs.pop(0).result()

    def close(self) -> None:
        """Wait for the background step or prediction still running, then end the worker thread (the default pool's;
        an executor passed in is its owner's to end). ``reset`` and ``act`` must not be called after."""
        self._drain()
        if self._pending is not None:
            future, self._pending = self._pending[1], None
            if not future.cancel():
                future.exception()  # wait for it to end; its result or error no longer matters
        if self._owns_executor:
            self.executor.shutdown(wait=True)

    def __enter__(self) -> PrefetchingPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drain(self) -> None:
        """Cancel the background steps not started and wait for the running one; their errors no longer matter."""
        for job in self._jobs:
            job.cancel()
        for job in self._jobs:
            if not job.cancelled():
                job.exception()
        self._jobs = []
