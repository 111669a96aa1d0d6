"""End-to-end smoke run of `make run`'s script: tiny demos → cache → a few training steps → evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2robot.data.store import EpisodeStore

ROOT = Path(__file__).resolve().parents[2]


def test_pipeline_smoke(tmp_path: Path) -> None:
    args = ["encoder@train.encoder=micro_s2_random", "policy@train.policy=tiny", "record.n_episodes=3",
            f"train.demos={tmp_path / 'demos.zarr'}", f"train.runs_dir={tmp_path / 'runs'}", "train.name=smoke",
            "train.env.image_size=32", "train.steps=6", "train.batch_size=16", "train.warmup_steps=2",
            "train.val_fraction=0", "train.wandb.mode=disabled", "train.encoder.dtype=float32", "eval.n_envs=4",
            "eval.max_steps=4", "eval.videos=1", "eval.wandb.mode=disabled", "train.progress=false",
            "eval.n_random_positions=4", "train.views.n=1", "train.views.shift=0",
            f"train.views.scenes={tmp_path / 'scenes.zarr'}"]
    cmd = [sys.executable, str(ROOT / "scripts" / "run_pipeline.py"), *args]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "RANDOM" in run.stdout and "success" in run.stdout
    results = json.loads((tmp_path / "runs" / "smoke" / "eval" / "results.json").read_text())
    # 16 paper positions × 3 repeats, then held-out positions once each (make run's held_out_repeats)
    assert results["episodes"] == 48 + 4 and results["checkpoint_step"] == 6
    assert [(s["positions"], s["episodes"]) for s in results["sets"]] == [(16, 48), (4, 4)]
    assert results["positions"]["set"] == "paper" and "16 cube positions (paper) × 3 + 4 held-out × 1" in run.stdout
    # scene views: the same 3 episodes recorded again in varied scenes (same actions, other frames), read in training
    demos, scenes = EpisodeStore.open(tmp_path / "demos.zarr"), EpisodeStore.open(tmp_path / "scenes.zarr")
    assert scenes.attrs["recorder"]["variation"] == "standard_visual" and scenes.n_episodes == 3
    assert np.array_equal(scenes.array("action")[:], demos.array("action")[:])
    assert not np.array_equal(scenes.array("rgb_front")[:], demos.array("rgb_front")[:])
    assert len(list(tmp_path.rglob("*-views1s0r0-scenes.zarr"))) == 1
    # make run executes all 16 actions of each chunk (configs/pipeline.yaml), and its checkpoint says so
    assert results["execution"] == {"execution": "receding", "execute_steps": 16,
                                    "checkpoint": {"execution": "receding", "execute_steps": 16}}
    # re-running resumes every stage: nothing re-recorded or re-trained, the evaluation reruns; another execution
    # is not a different training run: the finished checkpoint is evaluated executing as eval.executing says
    again = subprocess.run([*cmd, "eval.executing.execute_steps=8"], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained for 6" in again.stdout and "caching" not in again.stderr
    results = json.loads((tmp_path / "runs" / "smoke" / "eval" / "results.json").read_text())
    assert results["execution"]["execute_steps"] == 8 and results["execution"]["checkpoint"]["execute_steps"] == 16


def test_scene_views_must_be_recorded_in_a_visual_variation() -> None:
    """A physical factor changes the episodes, so they could not be the demos' own in another scene."""
    from s2robot.data.views import ViewsConfig
    from s2robot.workflows.pipeline import PipelineConfig
    from s2robot.workflows.train import TrainConfig

    views = TrainConfig(views=ViewsConfig(n=1, shift=0, scenes="demos/x-scenes.zarr"))
    with pytest.raises(ValueError, match=r"changes the physics .*standard_visual"):
        PipelineConfig(train=views, scene_variation="standard")
    with pytest.raises(ValueError, match="unknown variation factor 'lights'"):
        PipelineConfig(train=views, scene_variation="lights:high")
    PipelineConfig(scene_variation="standard")  # without scene views nothing is recorded in it


def test_oracle_absolute_pipeline_smoke(tmp_path: Path) -> None:
    """The recipe's levers end to end: demos without cameras (noise injection, a post-success tail), the privileged
    oracle encoder, absolute joint targets; the evaluation runs the env in absolute mode and says PRIVILEGED."""
    args = ["encoder@train.encoder=oracle", "policy@train.policy=tiny", "train.policy.action_space=absolute",
            "record.n_episodes=3", "record.noise_std=0.01", "record.tail_steps=3", "train.env.cameras=[]",
            f"train.demos={tmp_path / 'demos.zarr'}", f"train.runs_dir={tmp_path / 'runs'}", "train.name=oracle",
            "train.steps=6", "train.batch_size=16", "train.warmup_steps=2", "train.val_fraction=0",
            "train.wandb.mode=disabled", "eval.n_envs=0", "eval.max_steps=4", "eval.videos=0",
            "eval.wandb.mode=disabled", "train.progress=false"]
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_pipeline.py"), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "runs" / "oracle" / "eval" / "results.json").read_text())
    assert results["encoder"]["privileged"] is True and results["label"].startswith("ORACLE: PRIVILEGED")
    assert results["env"]["action_mode"] == "absolute" and results["env"]["cameras"] == []
    assert "ORACLE: PRIVILEGED" in (tmp_path / "runs" / "oracle" / "eval" / "table.md").read_text()
    assert "encoder PRIVILEGED state" in run.stdout  # training says so too
