"""The perturbation evaluation: eval.py variation=..., the robustness suite's outputs, its pairing with clean, reuse
of finished conditions, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_demos, micro_encoder_config

from s2robot.common.runlog import WandbConfig
from s2robot.policy.configuration import PolicyConfig
from s2robot.sim.env import EnvConfig
from s2robot.workflows.evaluate import EvalConfig, eval_dir_name, evaluate
from s2robot.workflows.robustness import RobustnessConfig, run_robustness
from s2robot.workflows.robustness_report import condition_rows, format_robustness
from s2robot.workflows.train import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy on a random micro encoder, trained for 4 steps on 32-px synthetic demos."""
    tmp = tmp_path_factory.mktemp("ckpt")
    make_demos(tmp / "d.zarr", (12, 9, 14, 10), cubes=True)
    cfg = TrainConfig(name="t", runs_dir=str(tmp / "runs"), encoder=micro_encoder_config(), demos=str(tmp / "d.zarr"),
                      policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, ff_mult=2),
                      env=EnvConfig(image_size=32, max_steps=4), steps=4, batch_size=8, progress=False,
                      wandb=WandbConfig(mode="disabled"))
    return train(cfg)


def test_eval_under_a_variation_runs_the_same_episodes(checkpoint: Path) -> None:
    """eval.py variation=...: results.json says which, the default folder is eval-<variation>, and the episodes
    (cubes, seeds) are the clean evaluation's."""
    kw = {"checkpoint": str(checkpoint), "wandb": WandbConfig(mode="disabled"), "progress": False, "n_envs": 2,
          "videos": 0, "repeats": 1, "positions": [[0.5, 0.0], [0.6, 0.1], [0.45, -0.1]]}
    clean = evaluate(EvalConfig(**kw))
    varied = evaluate(EvalConfig(**kw, variation="light_intensity:high"))
    assert varied["variation"] == "light_intensity:high" and clean["variation"] == "none"
    assert varied["outputs"]["dir"].endswith("/eval-light_intensity_high") and clean["outputs"]["dir"].endswith("/eval")
    pick = [(e["seed"], e["cube_xy"]) for e in clean["episodes_detail"]]
    assert pick == [(e["seed"], e["cube_xy"]) for e in varied["episodes_detail"]]
    assert eval_dir_name("a:low+b:high") == "eval-a_low__b_high"
    with pytest.raises(ValueError, match="unknown variation factor"):
        EvalConfig(**kw, variation="sunshine:high")


def test_robustness_suite_writes_its_report_and_reuses_finished_conditions(checkpoint: Path, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    cfg = RobustnessConfig(checkpoint=str(checkpoint), out=str(tmp_path), n_random_positions=3, n_envs=0,
                           progress=False, wandb=WandbConfig(mode="disabled"),
                           conditions=["light_intensity:high", "cube_size:high"])
    assert cfg.suite() == ["none", "light_intensity:high", "cube_size:high"]
    report = run_robustness(cfg)
    rows = {r["condition"]: r for r in report["conditions"]}
    assert list(rows) == ["none", "light_intensity:high", "cube_size:high"]
    for name, r in rows.items():
        assert r["episodes"] == 3 and r["ci95"][0] <= r["success_rate"] <= r["ci95"][1]
        assert ("paired" in r) == (name != "none")
    assert rows["cube_size:high"]["expert_success_rate"] is not None  # physical: the expert ran it too
    assert rows["light_intensity:high"]["expert_success_rate"] is None
    assert rows["light_intensity:high"]["paired"]["n"] == 3 and rows["light_intensity:high"]["paired"]["ci95_positions"]
    for name in ("robustness.md", "robustness.json", "robustness.png", "robustness_frames.png"):
        assert (tmp_path / name).stat().st_size > 200, name
    assert "light_intensity:high" in (tmp_path / "robustness.md").read_text()
    stored = json.loads((tmp_path / "conditions" / "light_intensity_high" / "results.json").read_text())
    assert stored["variation"] == "light_intensity:high"
    capsys.readouterr()
    again = run_robustness(cfg)  # every condition is reused, not evaluated again
    assert capsys.readouterr().out.count("reusing") == 3
    assert json.loads(json.dumps(again["conditions"])) == json.loads(json.dumps(report["conditions"]))


def test_robustness_refuses_a_variation_and_bad_conditions(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="sets each condition's variation itself"):
        RobustnessConfig(checkpoint=str(checkpoint), variation="light_intensity:high")
    with pytest.raises(ValueError, match="unknown level 'huge'"):
        RobustnessConfig(checkpoint=str(checkpoint), conditions=["camera_pose:huge"])
    with pytest.raises(ValueError, match="unknown level"):
        RobustnessConfig(checkpoint=str(checkpoint), levels=["extreme"])


def test_condition_rows_pair_each_condition_with_clean() -> None:
    """A condition that fails where clean succeeds comes out as a negative paired difference."""
    def results(successes: list[bool]) -> dict:
        eps = [{"position": i, "repeat": 0, "seed": 10 + i, "success": s, "cube_xy": [0.4 + 0.01 * i, 0.0]}
               for i, s in enumerate(successes)]
        return {"successes": sum(successes), "episodes": len(successes), "episodes_detail": eps,
                "failure_modes": {"missed_grasp": len(successes) - sum(successes)}}

    clean, dark = results([True] * 20), results([True] * 5 + [False] * 15)
    rows = condition_rows({"none": clean, "light_intensity:high": dark}, clean)
    assert rows[1]["paired"]["difference"] == pytest.approx(-0.75) and rows[1]["paired"]["ci95_positions"][1] < 0
    text = format_robustness(rows)
    assert "**worse**" in text and "weakest `light_intensity:high` 5/20 = 25.0%" in text
