"""End to end on the arm, through franky to franky-sim on loopback: 2 demos → cache → train → evaluate 2 positions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from s2robot.data.store import EpisodeStore

pytest.importorskip("franky")
pytest.importorskip("franky_sim")
ROOT = Path(__file__).resolve().parents[2]


def test_arm_pipeline_in_franky_sim(tmp_path: Path) -> None:
    """The unchanged workflows run on s2robot/FrankaReal-v0 (the store's schema against the simulated env's:
    tests/workflows/test_record_real.py); results.json is complete, with the control loop's timing; the encoder and
    the policy run in the background, on the threads left beside franky-sim's physics."""
    args = ["env@train.env=franka_sim", "encoder@train.encoder=micro_s2_random", "policy@train.policy=tiny",
            "record.n_episodes=2", "record.workers=1", f"train.demos={tmp_path / 'demos.zarr'}",
            f"train.runs_dir={tmp_path / 'runs'}", "train.name=arm", "train.env.image_size=32", "train.steps=6",
            "train.batch_size=16", "train.warmup_steps=2", "train.val_fraction=0", "train.wandb.mode=disabled",
            "train.encoder.dtype=float32", "eval.positions=[[0.5,0.0],[0.55,0.1]]", "eval.repeats=1",
            "eval.n_random_positions=0", "eval.max_steps=6", "eval.videos=1", "eval.n_envs=0", "eval.prefetch=1",
            "eval.executing.execute_steps=4",
            "eval.wandb.mode=disabled", "train.progress=false"]
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_pipeline.py"), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]

    arm = EpisodeStore.open(tmp_path / "demos.zarr")
    assert arm.n_episodes == 2 and arm.attrs["env"]["options"]["host"] == "franky-sim"
    assert arm.attrs["recorder"]["policy"] == "scripted expert"
    cell = arm.attrs["cell"]  # the arm's robot, host, cameras and limits, once per store
    assert cell["robot"] == "fr3" and cell["host"] == "franky-sim" and cell["address"].startswith("127.")
    assert cell["cameras"]["front"]["source"] == (
        "mujoco:front") and len(cell["safety"]["torque_threshold"]) == 7
    assert all(arm.episode_info(i)["success"] and "timing" in arm.episode_info(i) for i in range(2))

    results = json.loads((tmp_path / "runs" / "arm" / "eval" / "results.json").read_text())
    assert results["episodes"] == 2 and results["env"]["id"] == "s2robot/FrankaReal-v0"
    assert results["timing"]["steps"] == 12 and "missed_deadlines" in results["timing"]
    assert all(e["timing"]["steps"] == 6 for e in results["episodes_detail"])
    assert "control loop over 2 episodes" in run.stdout
    assert results["prefetch"]["chunks"] >= 2 and "| obs→send, robot clock |" in run.stdout  # the timing table
    assert re.search(r"torch threads \d+ of \d+ cores(: \S+ \S+ for franky-sim's physics)?\n", run.stdout)
    assert list((tmp_path / "runs" / "arm" / "eval" / "videos").glob("*.mp4"))
