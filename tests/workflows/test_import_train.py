"""End-to-end smoke run of a user's own data: a LeRobot v3.0 dataset → ``store import`` → ``scripts/train_bc.py``
(feature cache, then training) on the imported store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from data.test_lerobot import make_episodes, write_lerobot_v3

from s2robot.data.features import open_feature_cache
from s2robot.data.store import EpisodeStore
from s2robot.policy.checkpoint import read_parts
from s2robot.workflows.evaluate import EvalConfig, evaluate
from s2robot.workflows.store import main

ROOT = Path(__file__).resolve().parents[2]


def test_import_a_lerobot_dataset_and_train_on_it(tmp_path: Path) -> None:
    source = write_lerobot_v3(tmp_path / "lerobot", make_episodes((12, 12, 12), h=32, w=48))  # 32×48: crop to 32×32
    demos = tmp_path / "demos" / "mine.zarr"
    assert main(["import", str(source), "--format", "lerobot", "--out", str(demos), "--image-size", "32"]) == 0
    store = EpisodeStore.open(demos)
    assert store.spec("rgb_front")[1] == (32, 32, 3) and store.attrs["control_hz"] == 10
    args = [f"demos={demos}", f"runs_dir={tmp_path / 'runs'}", "name=mine", "encoder=micro_random",
            "encoder.device=cpu", "encoder.dtype=float32", "policy=tiny", "steps=3", "batch_size=8", "warmup_steps=1",
            "val_fraction=0", "save_every=3", "log_every=1", "device=cpu", "wandb.mode=disabled", "progress=false"]
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_bc.py"), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    last = tmp_path / "runs" / "mine" / "checkpoints" / "last"
    config = read_parts(last)["config"]
    assert config["step"] == 3 and config["shape"]["proprio_dim"] == 6 and config["shape"]["action_dim"] == 4
    cache = open_feature_cache(config["cache"]["path"])
    assert config["cache"]["fingerprint"] == cache.fingerprint
    assert config["cache"]["source"] == cache.attrs["source"]["fingerprint"] == store.fingerprint
    assert cache.attrs["source"]["attrs"]["imported"]["format"] == "lerobot"
    # no simulation to roll it out in: evaluation refuses, naming the imported dataset
    assert "lerobot" in config["sim_env_problem"]
    with pytest.raises(ValueError, match=r"cannot be evaluated in simulation.*imported from the lerobot dataset"):
        evaluate(EvalConfig(checkpoint=str(last), n_envs=0, videos=0))
