"""Encoder presets resolve from the installed package alone, without the repository's ``configs/`` folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = """
import s2robot, sys
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder
assert s2robot.__file__.startswith(sys.argv[1]), s2robot.__file__
assert EncoderConfig.from_name("mvp_vitb_s2").feature_dim() == 1536
enc = FrozenS2Encoder(EncoderConfig.from_name("micro_s2_random", device="cpu"))
print(enc.feature_dim)
"""


@pytest.mark.slow
def test_presets_resolve_from_a_non_editable_install(tmp_path: Path) -> None:
    target, elsewhere, src = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "src"
    elsewhere.mkdir()
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "runs", "demos", "weights", "outputs", "__pycache__")
    shutil.copytree(ROOT, src, ignore=skip)  # build from a copy: pip leaves build/ behind
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    assert not (target / "configs").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", CHECK, str(target)], cwd=elsewhere, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "64"
