"""Deadline accounting of a 10 Hz control loop (the arm's; recording and evaluation report it): when each
observation was taken, when its action came back and was sent, and which steps missed their deadline.

The loop is paced by the robot's own clock (``RobotState.time``): on a real arm that is real time, in franky-sim it
is simulated time, so control is right at any simulation speed and the wall-clock ratio is reported, not hidden.
With a remote policy server, each step's round trip to the server is summarized too (``round_trip_summary``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class StepTimes:
    """One control step. Wall times on ``time.perf_counter()`` [s]; ``robot`` on the robot's clock [s]."""

    observed: float  # the observation (state + frames) of this step was complete
    acted: float  # the policy's action for it arrived at the env (encode + policy done)
    sent: float  # the safe joint target went out to the arm
    robot: float  # the robot clock when the target was sent
    skipped: int = 0  # control periods this step overran (0: sent before its deadline)
    frame_age: float | None = None  # age of the oldest camera frame in the observation [s], when the cameras know it
    observed_robot: float | None = None  # the robot clock when the observation was complete [s]


@dataclass
class LoopTimer:
    """Per-step times of one episode and its summary. ``period`` is the control period [s] (0.1 at 10 Hz)."""

    period: float = 0.1
    steps: list[StepTimes] = field(default_factory=list)

    def add(self, observed: float, acted: float, sent: float, robot: float, skipped: int = 0,
            frame_age: float | None = None, observed_robot: float | None = None) -> None:
        self.steps.append(StepTimes(observed, acted, sent, robot, skipped, frame_age, observed_robot))

    def summary(self) -> dict[str, float | int]:
        """p50/p99 of the wall and robot-clock periods between sends [ms], the observation-to-send latency [ms],
        missed deadlines (steps whose target went out after their deadline on the robot's clock; the loop then waits
        for the next tick of its 10 Hz grid, ``skipped_periods`` in all) and the wall-over-robot time ratio (1 in
        real time; >1 when a simulation runs slower). With ~100 steps an episode, p99 is close to the maximum. When the
        cameras know their frames' ages (the rehearsal's), p50/p99 of the observations' frame age [ms] too; when the
        steps know the robot clock at their observation, p50/p99 of observation-to-send on the robot's clock [ms]
        (what the deadline sees; in franky-sim the clock stands still while a frame renders, the wall clock not)."""
        if len(self.steps) < 2:
            return {"steps": len(self.steps)}
        sent = np.array([s.sent for s in self.steps])
        robot = np.array([s.robot for s in self.steps])
        latency = np.array([s.sent - s.observed for s in self.steps])
        wall_period, robot_period = np.diff(sent), np.diff(robot)
        skipped = np.array([s.skipped for s in self.steps])
        robot_span = robot[-1] - robot[0]
        ages = np.array([s.frame_age for s in self.steps if s.frame_age is not None])
        frames = {"frame_age_p50_ms": 1e3 * float(np.median(ages)),
                  "frame_age_p99_ms": 1e3 * float(np.quantile(ages, 0.99))} if len(ages) else {}
        if all(s.observed_robot is not None for s in self.steps):
            on_robot = robot - np.array([s.observed_robot for s in self.steps])  # (T,) [s]
            frames |= {"robot_latency_p50_ms": 1e3 * float(np.median(on_robot)),
                       "robot_latency_p99_ms": 1e3 * float(np.quantile(on_robot, 0.99))}
        return {
            "steps": len(self.steps),
            "period_p50_ms": 1e3 * float(np.median(wall_period)),
            "period_p99_ms": 1e3 * float(np.quantile(wall_period, 0.99)),
            "robot_period_p50_ms": 1e3 * float(np.median(robot_period)),
            "robot_period_p99_ms": 1e3 * float(np.quantile(robot_period, 0.99)),
            "latency_p50_ms": 1e3 * float(np.median(latency)),
            "latency_p99_ms": 1e3 * float(np.quantile(latency, 0.99)),
            "missed_deadlines": int((skipped > 0).sum()),
            "skipped_periods": int(skipped.sum()),
            "wall_per_robot_s": float((sent[-1] - sent[0]) / robot_span) if robot_span > 0 else float("nan"),
            **frames,
        }


def format_timing(summary: dict[str, float | int]) -> str:
    """One line for the console: loop period p50/p99, latency, missed deadlines, slowdown."""
    if "period_p50_ms" not in summary:
        return f"{summary.get('steps', 0)} steps (too few to time)"
    return (f"loop period p50 {summary['period_p50_ms']:.0f} ms / p99 {summary['period_p99_ms']:.0f} ms wall "
            f"(robot clock p50 {summary['robot_period_p50_ms']:.0f} ms), obs→send p50 "
            f"{summary['latency_p50_ms']:.0f} ms"
            + (f" (robot clock {summary['robot_latency_p50_ms']:.0f} ms)" if "robot_latency_p50_ms" in summary else "")
            + f", {summary['missed_deadlines']} missed deadlines, "
            f"{summary['wall_per_robot_s']:.2f} s wall per robot s"
            + (f", frames p50 {summary['frame_age_p50_ms']:.0f} ms old" if "frame_age_p50_ms" in summary else ""))


def combine_timing(summaries: list[dict[str, float | int]]) -> dict[str, float | int]:
    """Episodes' summaries as one: step-weighted median of the p50s, the worst p99s, missed deadlines summed, and the
    wall/robot time ratio's median and its slowest episode's."""
    timed = [s for s in summaries if "period_p50_ms" in s]
    if not timed:
        return {"steps": sum(int(s.get("steps", 0)) for s in summaries)}
    weights = np.array([s["steps"] for s in timed], dtype=np.float64)

    def weighted_median(key: str) -> float:
        values = np.array([s[key] for s in timed])
        order = np.argsort(values)
        cum = np.cumsum(weights[order])
        return float(values[order][np.searchsorted(cum, cum[-1] / 2)])

    out: dict[str, float | int] = {"episodes": len(timed), "steps": int(weights.sum())}
    for key in ("period_p50_ms", "robot_period_p50_ms", "latency_p50_ms", "wall_per_robot_s"):
        out[key] = weighted_median(key)
    for key in ("period_p99_ms", "robot_period_p99_ms", "latency_p99_ms"):
        out[key] = max(float(s[key]) for s in timed)
    out["wall_per_robot_s_max"] = max(float(s["wall_per_robot_s"]) for s in timed)  # the slowest episode
    out["missed_deadlines"] = sum(int(s["missed_deadlines"]) for s in timed)
    out["skipped_periods"] = sum(int(s.get("skipped_periods", 0)) for s in timed)
    for key in ("frame_age", "robot_latency"):  # when every episode knows them (the rehearsal's frame ages)
        if all(f"{key}_p50_ms" in s for s in timed):
            out[f"{key}_p50_ms"] = weighted_median(f"{key}_p50_ms")
            out[f"{key}_p99_ms"] = max(float(s[f"{key}_p99_ms"]) for s in timed)
    return out


def format_timing_table(summary: dict[str, float | int]) -> str:
    """A markdown table of ``combine_timing``'s summary: robot-clock and wall periods, observation→send latency and
    frame age (p50, p99 [ms]), then the late steps and the wall time per robot second (median, slowest episode)."""
    if "period_p50_ms" not in summary:
        return f"control loop: {summary.get('steps', 0)} steps (too few to time)"
    rows = ["| control loop | p50 [ms] | p99 [ms] |", "|---|---|---|"]
    names = [("robot_period", "period, robot clock"), ("period", "period, wall clock"),
             ("robot_latency", "obs→send, robot clock"), ("latency", "obs→send, wall clock"),
             ("frame_age", "frame age, robot clock")]
    rows += [f"| {name} | {summary[f'{key}_p50_ms']:.0f} | {summary[f'{key}_p99_ms']:.0f} |" for key, name in names
             if f"{key}_p50_ms" in summary]
    steps, late = int(summary["steps"]), int(summary["missed_deadlines"])
    slowest = f", slowest episode {summary['wall_per_robot_s_max']:.2f}" if "wall_per_robot_s_max" in summary else ""
    rows.append(f"\nlate steps (sent after their deadline): {late} of {steps} ({100 * late / max(steps, 1):.1f}%), "
                f"{summary.get('skipped_periods', 0)} periods skipped; wall time per robot second: median "
                f"{summary['wall_per_robot_s']:.2f}{slowest}"
                + (f" ({summary['episodes']} episodes)" if "episodes" in summary else ""))
    return "\n".join(rows)


def round_trip_summary(seconds: list[float]) -> dict[str, Any]:
    """One episode's round trips to a remote policy server (``policy.remote``), one per control step [s]: every
    step's [ms] (``ms``, rounded to µs) and their p50/p99/max [ms]."""
    ms = [round(1e3 * s, 3) for s in seconds]
    if not ms:
        return {"steps": 0, "ms": []}
    return {"steps": len(ms), **_percentiles(ms), "ms": ms}


def combine_round_trips(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Episodes' ``round_trip_summary`` as one over all their steps: p50/p99/max [ms] (without the per-step list)."""
    ms = [v for s in summaries for v in s["ms"]]
    return {"episodes": len(summaries), "steps": len(ms), **(_percentiles(ms) if ms else {})}


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": float(np.median(a)), "p99_ms": float(np.quantile(a, 0.99)), "max_ms": float(a.max())}
