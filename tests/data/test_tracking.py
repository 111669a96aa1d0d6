"""Tracking lag from a store's joints and targets: known lags recovered, episode bounds respected, the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2robot.data.store import EpisodeStore
from s2robot.data.tracking import best_lag, lag_residuals

ROOT = Path(__file__).resolve().parents[2]


def lagged_episodes(lag: float, lengths: tuple[int, ...] = (30, 40), seed: int = 0) -> tuple[np.ndarray, ...]:
    """Joints that reach each random-walk target ``lag`` steps late: (joints (T, 7), targets (T, 7), ends (E,))."""
    rng = np.random.default_rng(seed)
    joints, targets = [], []
    for n in lengths:
        t = np.cumsum(rng.uniform(-0.05, 0.05, (n + 4, 7)), axis=0)  # 4 steps before the episode, to look back on
        whole, part = int(np.floor(lag)), lag - np.floor(lag)
        i = np.arange(4, n + 4)
        after = (1 - part) * t[i - whole] + part * t[i - whole - 1]  # the joints after each step
        joints.append(np.r_[t[3:4], after[:-1]])  # the joints before each step
        targets.append(t[4:])
    return np.concatenate(joints), np.concatenate(targets), np.cumsum(lengths)


@pytest.mark.parametrize("lag", [0.0, 1.0, 1.5, 2.25])
def test_a_known_lag_is_recovered(lag: float) -> None:
    joints, targets, ends = lagged_episodes(lag)
    residuals = lag_residuals(joints, targets, ends)
    assert best_lag(residuals) == lag
    assert residuals[lag] < 1e-12 < min(v for k, v in residuals.items() if k != lag)


def test_steps_of_another_episode_are_never_used() -> None:
    """An episode whose targets jump far from the one before: pairing across the boundary would show as residual."""
    joints, targets, ends = lagged_episodes(1.0)
    joints[ends[0]:] += 10.0
    targets[ends[0]:] += 10.0
    assert lag_residuals(joints, targets, ends)[1.0] < 1e-12
    with pytest.raises(ValueError, match="episodes too short"):
        lag_residuals(joints[:6], targets[:6], np.array([3, 6]))
    with pytest.raises(ValueError, match="one shape"):
        lag_residuals(joints, targets[:, :6], ends)


def test_the_script_reads_a_store(tmp_path: Path) -> None:
    joints, targets, ends = lagged_episodes(1.5)
    store = EpisodeStore.create(tmp_path / "d.zarr")
    for s, e in zip(np.r_[0, ends[:-1]], ends, strict=True):
        store.add_episode({"proprio": np.c_[joints[s:e], np.zeros(e - s)].astype(np.float32),
                           "target_executed": np.c_[targets[s:e], np.zeros(e - s)].astype(np.float32)})
    run = subprocess.run([sys.executable, str(ROOT / "scripts/tracking_lag.py"), str(tmp_path / "d.zarr")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "lag 1.50 steps" in run.stdout and "2 demos of 35.0 steps" in run.stdout
    bad = EpisodeStore.create(tmp_path / "e.zarr")
    bad.add_episode({"proprio": np.zeros((3, 8), np.float32)})
    run = subprocess.run([sys.executable, str(ROOT / "scripts/tracking_lag.py"), str(tmp_path / "e.zarr")],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "has no ['target_executed']" in run.stderr
