"""A simulated camera's frame timing on a scene clock: frame ticks, delays within latency ± jitter, the newest arrived
frame at a read, frame ages, seeding, and the checks of the settings."""

from __future__ import annotations

import numpy as np
import pytest

from s2robot.real.camera_timing import CameraTiming, FrameQueue

TICK = 1e-3  # the rehearsal's physics step [s]


def run(queue: FrameQueue, seconds: float, read_every: int = 100) -> tuple[list, list[tuple[float, object]]]:
    """Step a 1 ms scene clock for ``seconds``, capturing at the queue's ticks (state: the tick number) and reading
    every ``read_every`` ticks; returns every frame captured and (read time, what the read got)."""
    captured, reads = [], []
    for tick in range(1, round(seconds / TICK) + 1):
        now = tick * TICK
        if queue.due(now):
            queue.capture(now, tick)
            captured.append(queue.frames[-1])
        if tick % read_every == 0:
            reads.append((now, queue.newest(now)))
    return captured, reads


def test_frames_come_at_the_frame_rate_with_delays_within_latency_and_jitter() -> None:
    """At 30 fps a frame every 33.3 ms (to the 1 ms tick); each frame's delay uniform over 50 ± 15 ms."""
    captured, _ = run(FrameQueue(CameraTiming(fps=30, latency_ms=50, jitter_ms=15), seed=1), 20.0)
    gaps = np.diff([f.captured for f in captured])
    assert len(captured) in (599, 600) and np.all(np.abs(gaps - 1 / 30) <= TICK + 1e-9)
    delays = 1e3 * np.array([f.arrives - f.captured for f in captured])  # [ms]
    assert delays.min() >= 35 and delays.max() <= 65
    assert abs(delays.mean() - 50) < 2 and delays.std() > 7  # uniform over ±15 ms: std 8.7 ms
    assert np.histogram(delays, bins=3, range=(35, 65))[0].min() > 150  # spread over the whole range, not clumped


def test_a_read_gets_the_newest_frame_that_has_arrived() -> None:
    """Against every frame captured: the read's frame arrived by the read, and no later-captured one had."""
    captured, reads = run(FrameQueue(CameraTiming(), seed=2), 10.0, read_every=37)
    for now, got in reads:
        arrived = [f for f in captured if f.arrives <= now]
        assert got == (max(arrived, key=lambda f: f.captured) if arrived else None)
    assert len(FrameQueue(CameraTiming()).frames) == 0 and all(got is not None for _, got in reads[2:])


def test_frame_ages_at_a_10_hz_loop_match_the_settings() -> None:
    """Ages at 10 Hz reads (over 40 camera phases): never under latency − jitter or over latency + jitter + one
    period; on average the latency plus half a period (50 + 16.7 ms)."""
    timing = CameraTiming(fps=30, latency_ms=50, jitter_ms=15)
    ages = []
    for seed in range(40):
        _, reads = run(FrameQueue(timing, seed=seed), 5.0)
        ages += [1e3 * (now - got.captured) for now, got in reads if got is not None]
    ages_a = np.array(ages)
    assert len(ages_a) == 40 * 50
    assert ages_a.min() >= 35 - 1e-6 and ages_a.max() <= 50 + 15 + 1e3 / 30 + 1e-6
    assert abs(ages_a.mean() - (50 + 1e3 / 60)) < 3


def test_the_same_seed_gives_the_same_frames_and_another_seed_others() -> None:
    def delays(seed: int) -> list[float]:
        return [f.arrives - f.captured for f in run(FrameQueue(CameraTiming(), seed=seed), 2.0)[0]]

    assert delays(5) == delays(5) and delays(5) != delays(6)
    queue = FrameQueue(CameraTiming(), seed=5)
    queue.reseed(6)  # an episode's seed: the delays to come, on the same frame ticks
    assert [f.captured for f in run(queue, 2.0)[0]] == [f.captured for f in run(FrameQueue(CameraTiming(), 5), 2.0)[0]]


def test_a_scene_that_skips_ticks_drops_the_frames_it_missed() -> None:
    queue = FrameQueue(CameraTiming(fps=30, latency_ms=0, jitter_ms=1), seed=0)
    first = queue.next_capture
    queue.capture(first + 0.1, "late")  # three ticks late: one frame, the next tick after now
    assert len(queue.frames) == 1 and first + 0.1 < queue.next_capture <= first + 0.1 + 1 / 30 + 1e-9


def test_latency_and_jitter_zero_is_off() -> None:
    assert not CameraTiming(latency_ms=0, jitter_ms=0).on and CameraTiming().on and CameraTiming(jitter_ms=0).on


@pytest.mark.parametrize("kwargs", [{"fps": 0}, {"fps": float("nan")}, {"latency_ms": -1}, {"jitter_ms": -5},
                                    {"latency_ms": float("inf")}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="camera"):
        CameraTiming(**kwargs)
