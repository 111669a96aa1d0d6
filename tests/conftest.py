"""Shared test fixtures: tiny models and deterministic inputs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch

import envs  # noqa: F401  (first: envs.cube_pick picks MuJoCo's headless GL backend before anything imports mujoco)


@pytest.fixture(autouse=True)
def _seed_and_isolate(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Seed torch; point the weights cache at an empty folder so no test sees a user's files."""
    torch.manual_seed(0)
    monkeypatch.setenv("S2ROBOT_WEIGHTS_DIR", str(tmp_path_factory.mktemp("weights")))
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(autouse=True)
def _no_thread_outlives_its_test() -> Iterator[None]:
    """A test ends every non-daemon thread it started (a worker left running torch beside the next test's ops makes
    failures depend on test order and timing); one still alive 10 s after the test fails it, named."""
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and not t.daemon]
    for thread in left:
        thread.join(timeout=10)
    if alive := [t.name for t in left if t.is_alive()]:
        pytest.fail(f"threads left running by this test: {alive}: close what started them (e.g. PrefetchingPolicy)")
