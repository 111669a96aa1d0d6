"""``scripts/eval.py`` under torchrun: 2 gloo processes split the evaluation's waves and give the single-process
episodes; a failed share is reported by every rank, and a re-run runs only the waves no process finished. Plus the
wave plan and the parts' bookkeeping (``workflows.eval_shards``) on their own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from helpers import tiny_checkpoint

from s2robot.common.distributed import DistInfo
from s2robot.sim.rollout import EpisodeResult, WaveDone, eval_episodes
from s2robot.workflows.eval_shards import finished_waves, merge_waves, part_path, parts_dir, plan_waves, run_shared

ROOT = Path(__file__).resolve().parents[2]
# 16 paper positions × 1 in waves of 2: rank 0 runs waves 0–3 (episodes 0–7), rank 1 waves 4–7 (episodes 8–15)
EVAL = ["repeats=1", "n_envs=2", "videos=0", "max_steps=3", "device=cpu", "progress=false", "wandb.mode=disabled"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), max_steps=3)


def eval_script(checkpoint: Path, out: Path, nproc: int) -> subprocess.CompletedProcess:
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else []
    cmd = [sys.executable, *launch, str(ROOT / "scripts/eval.py"), f"checkpoint={checkpoint}", f"out={out}", *EVAL]
    return subprocess.run(cmd, cwd=out.parent, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=600)


def episodes(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["episodes_detail"]


@pytest.mark.slow
def test_torchrun_reports_a_failed_share_then_resumes_to_the_single_process_episodes(checkpoint: Path,
                                                                                      tmp_path: Path) -> None:
    """Rank 1 cannot write its part (a folder is in the way): both ranks stop naming its share, rank 0's waves are
    kept; the re-run runs rank 1's 8 episodes alone and gives the one-process run's episodes, field by field."""
    single = eval_script(checkpoint, tmp_path / "single", 0)
    assert single.returncode == 0, single.stderr[-3000:]
    out = tmp_path / "sharded"
    part_path(out, 1, 2).mkdir(parents=True)
    failed = eval_script(checkpoint, out, 2)
    assert failed.returncode != 0
    assert "rank 1 of 2 failed on its share of the evaluation" in failed.stderr
    assert "episodes 8–15: IsADirectoryError" in failed.stderr and "finished waves are kept" in failed.stderr
    assert not (out / "results.json").exists()
    kept = [json.loads(line) for line in part_path(out, 0, 2).read_text().splitlines()]
    assert [w["wave"] for w in kept[1:]] == [0, 1, 2, 3] and kept[0]["waves"] == [0, 4]

    shutil.rmtree(part_path(out, 1, 2))
    run = eval_script(checkpoint, out, 2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "8 episodes of 4 finished waves kept" in run.stdout
    assert json.loads((out / "results.json").read_text())["episodes_run"] == 8
    assert not parts_dir(out).exists()
    assert episodes(out) == episodes(tmp_path / "single")
    assert run.stdout.count("results: ") == 1  # rank 0 alone prints the table


def result(position: int) -> EpisodeResult:
    return EpisodeResult(position=position, cube_xy=(0.5, 0.0), repeat=0, seed=position, success=False,
                         steps_to_success=None, steps=3, max_lift=0.0)


def test_plan_waves_covers_every_wave_once_in_order() -> None:
    for n_waves in range(0, 9):
        for world in range(1, 5):
            plan = plan_waves(n_waves, world)
            assert [k for share in plan for k in share] == list(range(n_waves))
            assert max(map(len, plan)) - min(map(len, plan)) <= 1


def test_a_one_process_run_resumes_from_parts_of_another_world(tmp_path: Path) -> None:
    """Waves finished by 2 ranks count for a 1-process re-run; a part of another evaluation and a torn last line do
    not; merging refuses while a wave is missing, naming the rank and its episodes."""
    eps = eval_episodes([(0.5, 0.0)] * 6, [1] * 6, seed=0)  # 6 episodes, waves of 2: waves 0–2
    part = part_path(tmp_path, 1, 2)
    part.parent.mkdir(parents=True)
    rec = {"wave": 2, "results": [asdict(result(4)), asdict(result(5))], "videos": []}
    part.write_text(json.dumps({"key": "k", "rank": 1, "world": 2, "waves": [1, 3]}) + "\n" + json.dumps(rec)
                    + "\n" + '{"wave": 1, "resu')  # killed mid-write
    part_path(tmp_path, 0, 3).write_text(json.dumps({"key": "other"}) + "\n" + json.dumps({**rec, "wave": 0}) + "\n")
    assert list(finished_waves(tmp_path, "k")) == [2]
    with pytest.raises(RuntimeError, match=r"rank 0 of 1 did not finish its share, episodes 0–5 \(2 of its 3 waves"):
        merge_waves(tmp_path, "k", plan_waves(3, 1), 2, eps)

    ran: list[int] = []

    def run_waves(waves: list[int], on_wave: WaveDone) -> None:
        for k in waves:
            ran.append(k)
            on_wave(k, [result(2 * k), result(2 * k + 1)], {})

    results, videos, n_run = run_shared(tmp_path, "k", DistInfo(rank=0, world=1, local_rank=0), eps, 2, run_waves,
                                        lambda frames, results: [])
    assert ran == [0, 1] and n_run == 4 and videos == []
    assert [r.position for r in results] == [0, 1, 2, 3, 4, 5]
