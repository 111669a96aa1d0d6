"""Evaluation: results file, fingerprint refusal, vectorized = sequential (sim.rollout), episodes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_demos, micro_encoder_config

from s2robot.common.runlog import WandbConfig
from s2robot.policy.configuration import PolicyConfig
from s2robot.sim.env import EnvConfig
from s2robot.sim.rollout import EpisodeResult, eval_episodes
from s2robot.workflows.evaluate import EvalConfig, evaluate
from s2robot.workflows.report import summarize, wilson_interval
from s2robot.workflows.train import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy on a random micro encoder, trained for 4 steps on 32-px synthetic demos."""
    tmp = tmp_path_factory.mktemp("ckpt")
    make_demos(tmp / "d.zarr", (12, 9, 14, 10, 11, 13))
    cfg = TrainConfig(name="t", runs_dir=str(tmp / "runs"), encoder=micro_encoder_config(), demos=str(tmp / "d.zarr"),
                      policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, ff_mult=2),
                      env=EnvConfig(image_size=32, max_steps=5), steps=4, batch_size=8, progress=False,
                      wandb=WandbConfig(mode="disabled"))
    return train(cfg)


def run(checkpoint: Path, out: Path, **kw: object) -> dict:
    return evaluate(EvalConfig(checkpoint=str(checkpoint), out=str(out), wandb=WandbConfig(mode="disabled"),
                               progress=False, **kw))


def test_results_file_is_well_formed(checkpoint: Path, tmp_path: Path) -> None:
    report = run(checkpoint, tmp_path, n_envs=4, videos=2)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["per_position"]) == 16 and len(saved["episodes_detail"]) == 16
    assert saved["episodes"] == 16 and 0.0 <= saved["success_rate"] <= 1.0
    lo, hi = saved["ci95"]
    assert lo <= saved["success_rate"] <= hi
    assert saved["weights_random"] is True and "RANDOM" in saved["label"] and " cls, " in saved["label"]
    assert "RANDOM" in (tmp_path / "table.md").read_text()
    assert len(saved["seeds"]) == len(set(saved["seeds"])) == 16
    assert all(e["steps"] == 5 for e in saved["episodes_detail"] if not e["success"])  # max_steps from the ckpt
    assert (tmp_path / "success_map.png").stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == sorted(Path(v).name for v in
                                                                              report["outputs"]["videos"])
    assert len(report["outputs"]["videos"]) == 2


def test_vectorized_and_sequential_agree(checkpoint: Path, tmp_path: Path) -> None:
    a = run(checkpoint, tmp_path / "vec", n_envs=3, videos=0, max_steps=4, repeats=1)
    b = run(checkpoint, tmp_path / "seq", n_envs=0, videos=0, max_steps=4, repeats=1)
    for ea, eb in zip(a["episodes_detail"], b["episodes_detail"], strict=True):
        assert (ea["position"], ea["seed"], ea["success"], ea["steps"]) == (eb["position"], eb["seed"],
                                                                             eb["success"], eb["steps"])
        np.testing.assert_allclose(ea["final_fingertip"], eb["final_fingertip"], atol=1e-4)
    tips = np.array([e["final_fingertip"] for e in a["episodes_detail"]])
    assert np.ptp(tips, axis=0).max() > 0  # the episodes did differ (different cube positions, live policy)


def test_fingerprint_mismatch_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    part = json.loads((bad / "encoder.json").read_text())
    part["fingerprint"] = "0123456789abcdef"
    (bad / "encoder.json").write_text(json.dumps(part))
    with pytest.raises(ValueError, match="trained on features of encoder 0123456789abcdef"):
        run(bad, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="train_bc"):
        run(tmp_path / "missing.pt", tmp_path / "out")


def test_wilson_interval_matches_known_values() -> None:
    lo, hi = wilson_interval(10, 16)  # 62.5%: the paper's ViT-B-S² number
    assert (lo, hi) == pytest.approx((0.3864, 0.8152), abs=1e-4)  # by hand: 0.6008 ∓ 0.2144
    assert wilson_interval(0, 16)[0] == 0.0 and wilson_interval(16, 16)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_episodes_and_summary() -> None:
    eps = eval_episodes([(0.5, 0.0), (0.6, 0.1)], repeats=2, seed=7)
    assert [(e.position, e.repeat, e.seed) for e in eps] == [(0, 0, 7), (0, 1, 8), (1, 0, 9), (1, 1, 10)]
    res = [EpisodeResult(e.position, e.cube_xy, e.repeat, e.seed, e.seed % 2 == 0, 20 if e.seed % 2 == 0 else None,
                         20, 0.06, [0.0, 0.0, 0.0]) for e in eps]
    s = summarize(res)
    assert s["success_rate"] == 0.5 and [p["successes"] for p in s["per_position"]] == [1, 1]


def test_evaluation_does_not_import_the_trainer() -> None:
    code = ("import sys, s2robot.workflows.evaluate, s2robot.policy.checkpoint; "
            "assert 's2robot.workflows.train' not in sys.modules, 'evaluation imported the trainer'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_videos_skipped_with_a_warning_without_ffmpeg(tmp_path, monkeypatch) -> None:
    """A machine without imageio-ffmpeg (seen on the GPU machine) loses no results: videos are skipped."""
    import importlib.util

    from s2robot.sim.rollout import EpisodeResult
    from s2robot.workflows.report import write_episode_videos

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "imageio_ffmpeg" else real(name, *a))
    frames = {0: [np.zeros((8, 8, 3), np.uint8)] * 2}
    result = EpisodeResult.__new__(EpisodeResult)
    with pytest.warns(UserWarning, match="imageio-ffmpeg"):
        assert write_episode_videos(frames, [result], tmp_path / "videos") == []
    assert not (tmp_path / "videos").exists()
