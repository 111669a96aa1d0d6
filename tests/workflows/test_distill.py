"""Invariance distillation: the student starts as the teacher, learns the teacher's clean tokens from varied frames,
resumes exactly, exports with provenance, and refuses another teacher's checkpoint."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from s2robot.common.lock import writer_lock
from s2robot.sim.frames import FrameDataConfig, GeneratorConfig, paired_frames
from s2robot.vision import weights as W
from s2robot.vision.vit import build_vit
from s2robot.workflows.distill import DistillConfig, distill, invariance_loss, load_teacher


@pytest.fixture
def teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Random vit-micro weights where the resolver looks first."""
    model = build_vit("vit-micro")
    model.reset_parameters(torch.Generator().manual_seed(3))
    path = Path(os.environ["S2ROBOT_WEIGHTS_DIR"]) / "vit-micro.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, FrameDataConfig]:
    tmp = tmp_path_factory.mktemp("pairs")
    gen = GeneratorConfig(n_frames=24, image_size=32, max_steps=12, workers=1, variation="standard_visual",
                          out=str(tmp / "g.zarr"))
    data = FrameDataConfig(generator=gen)
    return (*paired_frames(data, progress=False), data)


def cfg(tmp_path: Path, data: FrameDataConfig, **kw: object) -> DistillConfig:
    base = {"teacher": "vit-micro", "data": data, "s2_img_sizes": [32, 64], "steps": 12, "batch_size": 8,
            "lr": 3e-3, "warmup_steps": 2, "device": "cpu", "runs_dir": str(tmp_path / "runs"), "name": "d",
            "export_name": "vit-micro", "export_dir": str(tmp_path / "weights"), "log_every": 4, "ckpt_every": 5}
    return DistillConfig(**(base | kw))


def test_student_learns_the_teachers_clean_tokens(teacher: Path, pairs, tmp_path: Path) -> None:
    varied, clean, data = pairs
    teacher_model, digest = load_teacher("vit-micro", torch.device("cpu"))
    assert digest == W.file_sha256(teacher) and not any(p.requires_grad for p in teacher_model.parameters())
    x = torch.randn(2, 3, 32, 32)
    assert invariance_loss(teacher_model, teacher_model, x, x).item() == 0.0  # the student starts as the teacher
    result = distill(cfg(tmp_path, data), frames=(varied, clean), progress=False)
    h = result["history"]
    assert result["step"] == 12 and np.mean(h[-4:]) < np.mean(h[:4])
    info = json.loads((tmp_path / "weights" / "vit-micro.json").read_text())
    assert info["teacher_sha256"] == digest and "standard_visual" in info["method"] and info["images_seen"] == 96
    assert info["data"]["clean_generator_key"] != info["data"]["generator_key"]
    model = build_vit("vit-micro")
    W.load_resolved(model, W.resolve_weights("vit-micro", str(result["export"])))  # loads as an encoder


def test_resume_is_exact_and_another_teacher_is_refused(teacher: Path, pairs, tmp_path: Path) -> None:
    varied, clean, data = pairs
    whole = distill(cfg(tmp_path, data, name="whole", export_name=None), frames=(varied, clean), progress=False)
    parts = cfg(tmp_path, data, name="parts", export_name=None)
    distill(parts, frames=(varied, clean), progress=False, stop_at=7)  # interrupted after step 7 (not a ckpt step)
    resumed = distill(parts, frames=(varied, clean), progress=False)
    assert resumed["history"] == whole["history"]  # bit for bit: weights, optimizer, schedule and RNG restored
    torch.save({"model": build_vit("vit-micro").state_dict()}, teacher)  # another teacher now
    with pytest.raises(ValueError, match="distilled another teacher's weights"):
        distill(replace(parts, steps=20), frames=(varied, clean), progress=False)


def test_a_second_distillation_of_the_same_run_is_refused(teacher: Path, pairs, tmp_path: Path) -> None:
    varied, clean, data = pairs
    run = cfg(tmp_path, data, export_name=None, steps=2)
    with writer_lock(run.run_dir, "run"), pytest.raises(RuntimeError, match=r"being written by another process"):
        distill(run, frames=(varied, clean), progress=False)
    assert not (run.run_dir / "last.pt").exists()
    assert distill(run, frames=(varied, clean), progress=False)["step"] == 2


def test_config_errors(pairs) -> None:
    _, _, data = pairs
    with pytest.raises(ValueError, match="clean_share"):
        DistillConfig(teacher="vit-micro", data=data, s2_img_sizes=[32], clean_share=1.0)
    with pytest.raises(ValueError, match="multiples of vit-micro's 32 px"):
        DistillConfig(teacher="vit-micro", data=data, s2_img_sizes=[48])
    with pytest.raises(ValueError, match="another architecture"):
        DistillConfig(teacher="vit-micro", data=data, s2_img_sizes=[32], export_name="vitti-112-invariant-cubepick")
