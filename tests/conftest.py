"""Shared test fixtures: tiny models and deterministic inputs."""

from __future__ import annotations

import pytest
import torch

import envs  # noqa: F401  (first: envs.cube_pick picks MuJoCo's headless GL backend before anything imports mujoco)


@pytest.fixture(autouse=True)
def _seed_and_isolate(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Seed torch; point the weights cache at an empty folder so no test sees a user's files."""
    torch.manual_seed(0)
    monkeypatch.setenv("S2ROBOT_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))
    monkeypatch.setenv("WANDB_MODE", "disabled")
