"""A simulated camera's frame timing: frames captured at a fixed rate on a scene's clock reach the host a latency
(± jitter) later, and a read takes the newest frame that has arrived, as a USB camera's driver hands it over.

The rehearsal (``real.rehearsal``) captures the scene's state at every frame tick into a ``FrameQueue`` and renders
the frame a read gets from the state at its capture, so the policy sees the scene as it was one camera latency ago,
as on a real arm. Times are seconds on the scene's clock (simulated time), never the wall clock.

Defaults, matched to an Intel RealSense D435 colour stream at 30 fps on Linux: a frame every 33.3 ms and a
capture-to-host latency of 50 ± 15 ms (uniform). Reported for that camera: 15–50 ms from a 30 fps frame's timestamp to
its arrival in the application on Ubuntu (librealsense issue #4702), with exposure and readout before the timestamp,
and the colour stream the slowest of the camera's streams (librealsense #1242): 30–70 ms from capture to host.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

REALSENSE_FPS = 30.0  # [Hz]
REALSENSE_LATENCY_MS = 50.0  # capture to host, mean [ms]
REALSENSE_JITTER_MS = 15.0  # half-width of the uniform spread around it [ms]


@dataclass(frozen=True)
class CameraTiming:
    """A camera's frame timing. fps: frame rate [Hz]; latency_ms: mean delay from a frame's capture to its arrival
    at the host [ms]; jitter_ms: each frame's delay is drawn uniformly from latency ± jitter (≥ 0) [ms]. Latency and
    jitter both 0: off, a read renders the scene as it is (an instantaneous camera)."""

    fps: float = REALSENSE_FPS
    latency_ms: float = REALSENSE_LATENCY_MS
    jitter_ms: float = REALSENSE_JITTER_MS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"camera fps must be > 0 [Hz], got {self.fps}")
        if not (math.isfinite(self.latency_ms) and math.isfinite(self.jitter_ms)
                and self.latency_ms >= 0 and self.jitter_ms >= 0):
            raise ValueError(f"camera latency and jitter must be finite and ≥ 0 [ms] (both 0: off), got "
                             f"{self.latency_ms}, {self.jitter_ms}")

    @property
    def on(self) -> bool:
        return self.latency_ms > 0 or self.jitter_ms > 0

    @property
    def period(self) -> float:
        """Time between frames [s]."""
        return 1.0 / self.fps


@dataclass(frozen=True)
class Captured:
    """One frame in the queue: its number, capture and arrival times [s] on the scene clock, and the scene state it
    was captured from (whatever the scene needs to render it)."""

    index: int
    captured: float
    arrives: float
    state: Any


class FrameQueue:
    """Frames at ``timing``'s ticks (the first at a random phase within one period of ``start``), each with its own
    delay drawn from a seeded RNG; ``newest(t)`` is the frame a read at time t gets. Holds only the frames that may
    still be read (those in flight and the newest arrived), a handful."""

    def __init__(self, timing: CameraTiming, seed: int = 0, start: float = 0.0) -> None:
        self.timing = timing
        self.rng = np.random.default_rng(seed)
        self.next_capture = start + float(self.rng.uniform(0.0, timing.period))  # a camera is not in phase with the arm
        self.frames: deque[Captured] = deque()
        self.count = 0

    def reseed(self, seed: int) -> None:
        """Draw the delays of the frames to come from ``seed`` (an episode's), keeping the frame ticks."""
        self.rng = np.random.default_rng(seed)

    def due(self, now: float) -> bool:
        """Whether a frame tick has come at scene time ``now`` [s]."""
        return now >= self.next_capture

    def capture(self, now: float, state: Any) -> None:
        """Add the frame of the tick that has come, captured from ``state`` at ``now`` [s]; ticks missed since (a
        scene that stepped past several) are skipped, as a camera drops frames nobody fetched."""
        t = self.timing
        spread = t.jitter_ms * float(self.rng.uniform(-1.0, 1.0))
        delay = max(0.0, t.latency_ms + spread) * 1e-3
        self.frames.append(Captured(self.count, now, now + delay, state))
        self.count += 1
        self.next_capture += t.period * (math.floor((now - self.next_capture) / t.period) + 1)
        arrived = [f for f in self.frames if f.arrives <= now]
        if len(arrived) > 1:  # an older arrived frame can never be the newest again
            newest = max(arrived, key=lambda f: f.captured)
            self.frames = deque(f for f in self.frames if f.arrives > now or f is newest)

    def newest(self, now: float) -> Captured | None:
        """The newest (latest captured) frame that has arrived by scene time ``now`` [s]; None before the first."""
        arrived = [f for f in self.frames if f.arrives <= now]
        return max(arrived, key=lambda f: f.captured) if arrived else None
