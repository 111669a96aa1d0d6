"""``scripts/cache_features.py`` under torchrun: 2 gloo processes build the single-process cache, bit for bit; a
failed share is reported by every rank, and a re-run keeps the shares an earlier run finished."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_demos

from s2robot.data.features import ensure_feature_cache
from s2robot.data.sharded_cache import part_path, parts_dir
from s2robot.data.store import EpisodeStore
from s2robot.vision.encoder import EncoderConfig

ROOT = Path(__file__).resolve().parents[2]
LENGTHS = (5, 7, 4, 6, 3, 5)  # batch 5: ranks 0 and 1 get episodes 0–1 and 2–5


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "scripts/cache_features.py"), *args, "encoder=micro_s2_random", "encoder.device=cpu",
           "batch_size=5"]
    return subprocess.run(cmd, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_torchrun_reports_a_failed_share_then_builds_the_single_process_cache(tmp_path: Path) -> None:
    """Rank 1 cannot write its part (a folder of notes is in the way): both ranks stop naming its share, rank 0's
    part is kept; the re-run encodes rank 1's share alone and merges the single-process cache, bit for bit."""
    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    single, _ = ensure_feature_cache(demos, EncoderConfig.from_name("micro_s2_random", device="cpu"),
                                     tmp_path / "single.zarr", batch_size=5, progress=False)
    out = tmp_path / "sharded.zarr"
    blocker = part_path(out, 1, 2)
    blocker.mkdir(parents=True)
    (blocker / "notes.txt").write_text("not a store")
    failed = torchrun(f"demos={demos}", f"out={out}", cwd=tmp_path)
    assert failed.returncode != 0
    assert "rank 1 of 2 failed on its share of" in failed.stderr and "episodes 2–5: FileExistsError" in failed.stderr
    assert "Re-run the same command: finished shares are kept" in failed.stderr
    assert EpisodeStore.open(part_path(out, 0, 2)).n_episodes == 2 and EpisodeStore.open(out).n_episodes == 0

    shutil.rmtree(blocker)
    run = torchrun(f"demos={demos}", f"out={out}", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 1/2: encoded 18 frames of episodes 2–5" in run.stdout and "rank 0/2: encoded" not in run.stdout
    assert "merged 2 part(s)" in run.stdout and not parts_dir(out).exists()
    a, b = EpisodeStore.open(out), EpisodeStore.open(single)
    assert a.keys == b.keys and np.array_equal(a.episode_ends, b.episode_ends)
    for k in a.keys:
        assert np.array_equal(a.get_steps(k, 0, a.n_steps), b.get_steps(k, 0, b.n_steps)), k
    assert [a.episode_info(i) for i in range(a.n_episodes)] == [b.episode_info(i) for i in range(b.n_episodes)]
    assert a.fingerprint == b.fingerprint and a.attrs == b.attrs
