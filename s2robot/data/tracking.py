"""How far behind its commanded joint targets an arm follows, measured from a recorded store.

A demo step ``t`` holds the observation before the action (``proprio[t]``: measured joints) and the joint targets the
action commanded (``target_executed[t]``), so the joints after step ``t`` are ``proprio[t + 1]``. An arm that follows
its targets ``L`` control steps late has ``proprio[t + 1] ≈ target[t − L]`` (linear between whole steps): 0 for the
simulated env's servos (within ~5% by the end of a step), 1 for the simulated env with ``action_delay=1``. The lag
is the ``L`` whose prediction is closest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

LAGS = tuple(np.round(np.arange(0.0, 3.01, 0.25), 2))  # lags tried [control steps]


def lag_residuals(joints: np.ndarray, targets: np.ndarray, episode_ends: np.ndarray,
                  lags: Sequence[float] = LAGS) -> dict[float, float]:
    """{lag [steps]: median over steps of the mean |joints after the step − target lag steps earlier| [rad]}.

    joints: (T, 7) measured joints before each step; targets: (T, 7) joint targets commanded at each step;
    episode_ends: (E,) exclusive end index of each episode. Only steps whose earlier targets lie in their own episode
    count, the same steps for every lag.
    """
    joints, targets = np.asarray(joints, np.float64), np.asarray(targets, np.float64)
    if joints.shape != targets.shape or joints.ndim != 2:
        raise ValueError(f"joints and targets must be (T, J) arrays of one shape, got {joints.shape} and "
                         f"{targets.shape}")
    reach = int(np.ceil(max(lags)))
    starts = np.r_[0, np.asarray(episode_ends)[:-1]]
    steps = np.concatenate([np.arange(s + reach, e - 1) for s, e in zip(starts, episode_ends, strict=True)])
    if steps.size == 0:
        raise ValueError(f"no step with {reach} earlier steps and a next one in its episode: episodes too short")
    residuals = {}
    for lag in lags:
        whole, part = int(np.floor(lag)), lag - np.floor(lag)
        predicted = (1 - part) * targets[steps - whole] + part * targets[steps - whole - 1]
        residuals[float(lag)] = float(np.median(np.abs(joints[steps + 1] - predicted).mean(axis=1)))
    return residuals


def best_lag(residuals: Mapping[float, float]) -> float:
    """The lag [control steps] with the smallest residual of ``lag_residuals``."""
    return min(residuals, key=residuals.__getitem__)
