"""Loop timing: periods, missed deadlines, latency and the wall-over-robot ratio from synthetic step times."""

from __future__ import annotations

import pytest

from s2robot.common.timing import LoopTimer, combine_timing, format_timing, format_timing_table


def schedule(robot: list[float], wall_per_robot: float = 1.0, latency: float = 0.02) -> LoopTimer:
    """A timer whose steps were sent at ``robot`` times [s] (wall = ratio × robot), observed ``latency`` before."""
    timer = LoopTimer(period=0.1)
    for t in robot:
        sent = 100.0 + wall_per_robot * t
        timer.add(observed=sent - latency, acted=sent - latency / 2, sent=sent, robot=t)
    return timer


def test_constant_schedule() -> None:
    """A constant 0.1 s schedule: period p50/p99 of 100 ms (wall and robot), latency = sent − observed, none missed."""
    s = schedule([0.1 * k for k in range(20)]).summary()
    assert s["steps"] == 20
    for key in ("period_p50_ms", "period_p99_ms", "robot_period_p50_ms", "robot_period_p99_ms"):
        assert s[key] == pytest.approx(100.0, abs=1e-6)
    assert s["latency_p50_ms"] == pytest.approx(20.0, abs=1e-6)
    assert s["latency_p99_ms"] == pytest.approx(20.0, abs=1e-6)
    assert s["missed_deadlines"] == 0
    assert s["wall_per_robot_s"] == pytest.approx(1.0)


def test_a_late_step_is_one_missed_deadline_and_its_skipped_periods() -> None:
    """A step sent after its deadline (2 periods skipped) in an otherwise 0.1 s schedule: one missed deadline, 2
    skipped periods; the p50 stays 100 ms and the gap shows in the p99."""
    timer = LoopTimer(period=0.1)
    robot = [0.1 * k for k in range(10)] + [0.9 + 0.3 + 0.1 * k for k in range(10)]
    for k, t in enumerate(robot):
        timer.add(observed=t - 0.02, acted=t - 0.01, sent=t, robot=t, skipped=2 if k == 10 else 0)
    s = timer.summary()
    assert s["missed_deadlines"] == 1 and s["skipped_periods"] == 2
    assert s["robot_period_p50_ms"] == pytest.approx(100.0, abs=1e-6)
    assert s["robot_period_p99_ms"] > 250.0


def test_latency_is_sent_minus_observed() -> None:
    """Latency per step is sent − observed (not acted − observed): p50 and p99 over varying latencies."""
    timer = LoopTimer(period=0.1)
    latencies = [0.01 * (k + 1) for k in range(11)]  # 10 … 110 ms, median 60 ms
    for k, lat in enumerate(latencies):
        sent = 0.1 * k
        timer.add(observed=sent - lat, acted=sent - 0.001, sent=sent, robot=sent)
    s = timer.summary()
    assert s["latency_p50_ms"] == pytest.approx(60.0, abs=1e-6)
    assert 100.0 < s["latency_p99_ms"] <= 110.0


def test_wall_twice_as_slow_as_robot() -> None:
    """Wall time running twice as slow as the robot clock gives wall_per_robot_s = 2 and 200 ms wall periods."""
    s = schedule([0.1 * k for k in range(10)], wall_per_robot=2.0).summary()
    assert s["wall_per_robot_s"] == pytest.approx(2.0)
    assert s["period_p50_ms"] == pytest.approx(200.0, abs=1e-6)
    assert s["robot_period_p50_ms"] == pytest.approx(100.0, abs=1e-6)
    assert s["missed_deadlines"] == 0  # deadlines are on the robot's clock


def test_format_mentions_missed_deadlines() -> None:
    """The console line gives the period, the number of missed deadlines and the slowdown."""
    timer = schedule([0.0, 0.1, 0.2, 0.6, 0.7], wall_per_robot=3.0)
    timer.steps[3].skipped = 3
    line = format_timing(timer.summary())
    assert "1 missed deadlines" in line
    assert "3.00 s wall per robot s" in line
    assert "loop period p50" in line


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_steps(n: int) -> None:
    """With fewer than 2 steps the summary is just the step count, and the line says so."""
    s = schedule([0.1 * k for k in range(n)]).summary()
    assert s == {"steps": n}
    assert format_timing(s) == f"{n} steps (too few to time)"


def test_timing_table_gives_late_steps_and_the_slowest_episodes_wall_per_robot() -> None:
    """Episodes combined: the table gives robot and wall periods, obs→send, the late steps' share, and the
    wall/robot ratio's median and its slowest episode's (a simulation that cannot keep real time shows)."""
    slow = schedule([0.1 * k for k in range(5)], wall_per_robot=2.5)
    slow.steps[2].skipped = 1
    combined = combine_timing([schedule([0.1 * k for k in range(10)]).summary(), slow.summary()])
    table = format_timing_table(combined)
    assert combined["wall_per_robot_s_max"] == pytest.approx(2.5)
    assert "| period, robot clock | 100 | 100 |" in table and "| obs→send, wall clock | 20 | 20 |" in table
    assert "late steps (sent after their deadline): 1 of 15 (6.7%)" in table
    assert "median 1.00, slowest episode 2.50 (2 episodes)" in table


def test_latency_on_the_robot_clock_leaves_out_what_the_clock_stood_still_for() -> None:
    """A 60 ms render with the robot clock standing still: 80 ms obs→send on the wall clock, 20 ms on the robot's."""
    timer = LoopTimer(period=0.1)
    for k in range(5):
        robot = 0.1 * k
        timer.add(observed=10.0 + 0.2 * k, acted=10.0 + 0.2 * k + 0.07, sent=10.0 + 0.2 * k + 0.08, robot=robot,
                  observed_robot=robot - 0.02)
    s = timer.summary()
    assert s["latency_p50_ms"] == pytest.approx(80.0) and s["robot_latency_p50_ms"] == pytest.approx(20.0)
    assert "| obs→send, robot clock | 20 | 20 |" in format_timing_table(combine_timing([s]))
