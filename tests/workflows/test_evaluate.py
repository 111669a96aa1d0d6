"""Evaluation: results file, positions sets, failure modes, nearest demo, fingerprint refusal, vectorized =
sequential (sim.rollout), episodes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import import_probe, make_demos, micro_encoder_config
from huggingface_hub import ModelCard
from omegaconf import OmegaConf

from s2robot.common.runlog import WandbConfig
from s2robot.policy.configuration import PolicyConfig, PolicyExecution
from s2robot.policy.model_card import card_evaluations
from s2robot.sim.env import EnvConfig
from s2robot.sim.rollout import FAILURE_MODES, EpisodeResult, eval_episodes
from s2robot.workflows.evaluate import EvalConfig, evaluate
from s2robot.workflows.report import format_table, plot_success_map, summarize, wilson_interval
from s2robot.workflows.train import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy on a random micro encoder, trained for 4 steps on 32-px synthetic demos."""
    tmp = tmp_path_factory.mktemp("ckpt")
    make_demos(tmp / "d.zarr", (12, 9, 14, 10, 11, 13), cubes=True)
    cfg = TrainConfig(name="t", runs_dir=str(tmp / "runs"), encoder=micro_encoder_config(), demos=str(tmp / "d.zarr"),
                      policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, ff_mult=2),
                      env=EnvConfig(image_size=32, max_steps=5), steps=4, batch_size=8, progress=False,
                      wandb=WandbConfig(mode="disabled"))
    return train(cfg)


def run(checkpoint: Path, out: Path, **kw: object) -> dict:
    return evaluate(EvalConfig(checkpoint=str(checkpoint), out=str(out), wandb=WandbConfig(mode="disabled"),
                               progress=False, **kw))


def test_results_file_is_well_formed(checkpoint: Path, tmp_path: Path) -> None:
    report = run(checkpoint, tmp_path, n_envs=4, videos=2, repeats=1)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["per_position"]) == 16 and len(saved["episodes_detail"]) == 16
    assert saved["episodes"] == 16 and 0.0 <= saved["success_rate"] <= 1.0
    assert saved["positions"] == {"set": "paper", "source": "envs.EVAL_POSITIONS", "fixed": 16, "n_random": 0,
                                  "position_seed": None, "count": 16}
    modes = [e["failure_mode"] for e in saved["episodes_detail"]]
    assert all((m is None) == e["success"] and (m is None or m in FAILURE_MODES)
               for m, e in zip(modes, saved["episodes_detail"], strict=True))
    assert sum(saved["failure_modes"].values()) == 16 - saved["successes"]
    assert "failures: missed_grasp" in (tmp_path / "table.md").read_text()
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
    card = ModelCard.load(checkpoint / "README.md")  # the checkpoint's model card records this evaluation
    lo, hi = saved["ci95"]
    recorded = next(e for e in card_evaluations(card.content) if e["out"] == str(tmp_path))
    assert (recorded["successes"], recorded["episodes"]) == (saved["successes"], 16)
    assert f"({saved['successes']}/16 episodes, Wilson 95% CI {100 * lo:.1f}–{100 * hi:.1f}%)" in card.text
    assert f"out={tmp_path}" in recorded["command"] and "repeats=1" in recorded["command"]


def test_vectorized_and_sequential_agree(checkpoint: Path, tmp_path: Path) -> None:
    a = run(checkpoint, tmp_path / "vec", n_envs=3, videos=0, max_steps=4, repeats=1)
    b = run(checkpoint, tmp_path / "seq", n_envs=0, videos=0, max_steps=4, repeats=1)
    for ea, eb in zip(a["episodes_detail"], b["episodes_detail"], strict=True):
        assert (ea["position"], ea["seed"], ea["success"], ea["steps"]) == (eb["position"], eb["seed"],
                                                                             eb["success"], eb["steps"])
        np.testing.assert_allclose(ea["final_fingertip"], eb["final_fingertip"], atol=1e-4)
    tips = np.array([e["final_fingertip"] for e in a["episodes_detail"]])
    assert np.ptp(tips, axis=0).max() > 0  # the episodes did differ (different cube positions, live policy)


def test_background_inference_runs_and_reports(checkpoint: Path, tmp_path: Path) -> None:
    """prefetch=1: the evaluation predicts chunks in a thread and says how many it dropped or waited for."""
    report = run(checkpoint, tmp_path, n_envs=2, videos=0, max_steps=5, repeats=1, positions=[[0.5, 0.0]] * 2,
                 prefetch=1)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["episodes"] == 2 and set(saved["prefetch"]) == {"chunks", "waits", "dropped"}
    assert report["prefetch"]["chunks"] >= 1


def test_execution_can_be_changed_for_an_evaluation(checkpoint: Path, tmp_path: Path) -> None:
    """executing.execute_steps / .execution override the checkpoint's for one evaluation, on the same weights, and
    say so."""
    kw = {"n_envs": 0, "videos": 0, "max_steps": 5, "repeats": 1, "positions": [[0.5, 0.0]]}
    trained = {"execution": "receding", "execute_steps": 8}
    base = run(checkpoint, tmp_path / "a", **kw)
    assert base["execution"] == {**trained, "checkpoint": trained}
    one = run(checkpoint, tmp_path / "b", executing=PolicyExecution(execute_steps=1), **kw)
    ens = run(checkpoint, tmp_path / "c", executing=PolicyExecution(execution="ensemble"), **kw)
    assert one["execution"] == {"execution": "receding", "execute_steps": 1, "checkpoint": trained}
    assert ens["execution"]["execution"] == "ensemble"
    assert json.loads((tmp_path / "b" / "results.json").read_text())["eval"]["executing"] == {"execution": None,
                                                                                        "execute_steps": 1}
    tip = {k: np.array(r["episodes_detail"][0]["final_fingertip"]) for k, r in (("8", base), ("1", one), ("e", ens))}
    assert np.abs(tip["8"] - tip["1"]).max() > 1e-5 and np.abs(tip["8"] - tip["e"]).max() > 1e-5  # re-planned
    with pytest.raises(ValueError, match=r"cannot execute this policy \(trained \{'execution': 'receding', "
                                         r"'execute_steps': 8\}, t_act=16\) with \{'execute_steps': 17\}"):
        run(checkpoint, tmp_path / "d", executing=PolicyExecution(execute_steps=17), **kw)
    # all 16 of each chunk leaves nothing to predict the next one behind: the error says what would
    with pytest.raises(ValueError, match=r"runs 16 of each 16-step chunk; .* executing.execute_steps ≤ 13 .* or "
                                         r"prefetch=0"):
        run(checkpoint, tmp_path / "e", executing=PolicyExecution(execute_steps=16), prefetch=2, **kw)


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


def test_checkpoint_env_naming_a_module_is_refused_before_it_is_imported(checkpoint: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An env.json whose id is gymnasium's ``module:id`` would import ``module`` when the env is made: a checkpoint
    must not choose code to run. The evaluation is refused while loading the checkpoint, and nothing is imported."""
    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    flag = import_probe(tmp_path, "s2robot_eval_probe")
    monkeypatch.syspath_prepend(str(tmp_path))
    part = json.loads((bad / "env.json").read_text())
    part["id"] = "s2robot_eval_probe:s2robot/CubePick-v0"
    (bad / "env.json").write_text(json.dumps(part))
    try:
        with pytest.raises(ValueError, match="is not one of s2robot's environments"):
            run(bad, tmp_path / "out", n_envs=0, videos=0, repeats=1, positions=[[0.5, 0.0]], max_steps=2)
    finally:
        imported = sys.modules.pop("s2robot_eval_probe", None) is not None
    assert not flag.exists() and not imported
    assert not (tmp_path / "out" / "results.json").exists()


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


def _keys(report: dict) -> tuple:
    """The schema of a results.json: its keys, and those of an episode and of a position entry."""
    return (sorted(report), sorted(report["episodes_detail"][0]), sorted(report["per_position"][0]),
            sorted(report["positions"]))


def test_positions_from_a_list_a_file_and_the_held_out_stream_round_trip(checkpoint: Path, tmp_path: Path) -> None:
    """Inline list, .csv, .json and random held-out positions reach results.json in order, with one schema."""
    xy = [[0.5, 0.0], [0.61, -0.12]]
    (tmp_path / "p.csv").write_text("x,y\n0.5,0.0\n0.61,-0.12\n")
    (tmp_path / "p.json").write_text(json.dumps({"positions": xy}))
    fast = {"n_envs": 0, "videos": 0, "max_steps": 2, "repeats": 1}
    reports = {name: run(checkpoint, tmp_path / name, positions=spec, **fast)
               for name, spec in [("list", xy), ("csv", str(tmp_path / "p.csv")), ("json", str(tmp_path / "p.json"))]}
    reports["random"] = run(checkpoint, tmp_path / "random", positions="none", n_random_positions=3, position_seed=5,
                            **fast)
    reports["both"] = run(checkpoint, tmp_path / "both", positions=xy, n_random_positions=3, position_seed=5, **fast)
    schema = _keys(json.loads((tmp_path / "list" / "results.json").read_text()))
    for name in reports:
        saved = json.loads((tmp_path / name / "results.json").read_text())
        assert _keys(saved) == schema, name
        got = [p["cube_xy"] for p in saved["per_position"]]
        assert saved["positions"]["count"] == len(got) == saved["episodes"], name
        if name != "random":
            assert got[:2] == xy, name
    assert reports["csv"]["positions"]["set"] == "file" and reports["list"]["positions"]["set"] == "list"
    held_out = [p["cube_xy"] for p in reports["random"]["per_position"]]
    from envs import held_out_positions

    assert held_out == held_out_positions(3, 5).tolist()
    assert [p["cube_xy"] for p in reports["both"]["per_position"]] == xy + held_out
    assert reports["random"]["positions"] == {"set": "none", "source": None, "fixed": 0, "n_random": 3,
                                              "position_seed": 5, "count": 3}
    # the fixed and the held-out set are summarized apart, each with its interval, and the table says both
    sets = reports["both"]["sets"]
    assert [(s["set"], s["positions"], s["episodes"]) for s in sets] == [("list", 2, 2),
                                                                         ("held-out (3 random, seed 5)", 3, 3)]
    assert sum(s["successes"] for s in sets) == reports["both"]["successes"]
    assert all(s["ci95"][0] <= s["success_rate"] <= s["ci95"][1] for s in sets)
    assert "held-out (3 random, seed 5): " in (tmp_path / "both" / "table.md").read_text()
    assert len(reports["list"]["sets"]) == 1
    fewer = run(checkpoint, tmp_path / "fewer", positions=xy, n_random_positions=3, position_seed=5,
                **{**fast, "repeats": 2, "held_out_repeats": 1})  # make run's budget: held-out positions once
    assert [(s["positions"], s["episodes"]) for s in fewer["sets"]] == [(2, 4), (3, 3)]
    assert len(set(fewer["seeds"])) == 7
    # another evaluation's results.json names the same positions
    again = run(checkpoint, tmp_path / "again", positions=str(tmp_path / "both" / "results.json"), **fast)
    assert [p["cube_xy"] for p in again["per_position"]] == xy + held_out


@pytest.mark.parametrize(("overrides", "message"), [
    ({"positions": [[0.9, 0.0]]}, r"positions\[0\] = \[0.9, 0.0\] lies outside the workspace x 0.4–0.65"),
    ({"positions": [[0.5, 0.0, 0.1]]}, "must be a list of \\[x, y\\] pairs"),
    ({"positions": [0.5, 0.0]}, "must be a list of \\[x, y\\] pairs"),
    ({"positions": [[0.5, float("nan")]]}, r"positions\[0\] = \[0.5, nan\] is not finite"),
    ({"positions": "pos.txt"}, "must end in .json or .csv"),
    ({"positions": "none"}, "leaves no position to evaluate"),
    ({"n_random_positions": -1}, "n_random_positions and position_seed must be ≥ 0"),
    ({"position_seed": -2}, "n_random_positions and position_seed must be ≥ 0"),
    ({"repeats": 0}, "repeats must be ≥ 1"),
    ({"max_steps": 0}, "max_steps must be ≥ 1"),
    ({"joint_noise": -0.1}, "joint_noise must be a finite value ≥ 0"),
    ({"joint_noise": float("inf")}, "joint_noise must be a finite value ≥ 0"),
    ({"videos": -2}, "videos must be ≥ -1"),
    ({"executing": {"execution": "chunked"}}, "execution must be one of"),
    ({"executing": {"execute_steps": 0}}, r"execute_steps must be ≥ 1 or null \(the checkpoint's\), got 0"),
])
def test_bad_evaluation_settings_are_refused(overrides: dict, message: str) -> None:
    """Refused where they enter, also through hydra's nested overrides (``executing.execute_steps=0``)."""
    with pytest.raises(ValueError, match=message):
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalConfig), overrides))


def test_bad_position_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        EvalConfig(positions=str(tmp_path / "missing.csv"))
    (tmp_path / "bad.csv").write_text("x,y\n0.5,zero\n")
    with pytest.raises(ValueError, match="every line must be 'x,y'"):
        EvalConfig(positions=str(tmp_path / "bad.csv"))
    (tmp_path / "far.json").write_text("[[0.5, 0.0], [0.5, 0.3]]")
    with pytest.raises(ValueError, match=r"positions file .*far.json\[1\] = \[0.5, 0.3\] lies outside"):
        EvalConfig(positions=str(tmp_path / "far.json"))


def test_repeats_differ_by_arm_noise_and_need_it(checkpoint: Path, tmp_path: Path) -> None:
    """Three repeats of one position start from different arm postures; without noise they are refused."""
    report = run(checkpoint, tmp_path, positions=[[0.5, 0.0]], n_envs=0, videos=0, max_steps=3)
    tips = np.array([e["final_fingertip"] for e in report["episodes_detail"]])
    assert len(tips) == 3 and len({tuple(t) for t in tips.round(6)}) == 3
    with pytest.raises(ValueError, match="repeats=3 with joint_noise=0"):
        run(checkpoint, tmp_path, positions=[[0.5, 0.0]], joint_noise=0.0)


def test_distance_to_the_nearest_training_cube(checkpoint: Path, tmp_path: Path) -> None:
    """The checkpoint records its training cubes; each episode reports the distance to the nearest one."""
    cubes = np.array(json.loads((checkpoint / "config.json").read_text())["demo_cubes"])
    assert len(cubes) == 5  # 6 demos, one held out for validation
    xy = [[0.5, 0.0], [0.6, 0.1]]
    report = run(checkpoint, tmp_path, positions=xy, n_envs=0, videos=0, max_steps=2, repeats=1)
    want = [np.linalg.norm(cubes - p, axis=1).min() for p in xy]
    assert [e["nearest_demo"] for e in report["episodes_detail"]] == pytest.approx(want)
    assert [p["nearest_demo"] for p in report["per_position"]] == pytest.approx(want)
    assert report["demo_cubes"] == {"source": "checkpoint", "count": 5}
    assert f"| {100 * want[1]:.1f} |" in (tmp_path / "table.md").read_text()


def test_failure_mode_summary_table_and_map(tmp_path: Path) -> None:
    """Failure-mode counts overall and per position, in the table's rows and count line, and on the map."""
    modes = [None, "missed_grasp", "dropped", "missed_grasp", "timeout", "lifted_too_little"]
    res = [EpisodeResult(i // 3, (0.5, 0.1 * (i // 3)), i % 3, i, m is None, 10 if m is None else None, 10, 0.02,
                         [0.0, 0.0, 0.0], m, 0.0, 0.031) for i, m in enumerate(modes)]
    s = summarize(res)
    assert s["failure_modes"] == {"missed_grasp": 2, "dropped": 1, "lifted_too_little": 1, "timeout": 1}
    assert [p["failure_modes"] for p in s["per_position"]] == [
        {"missed_grasp": 1, "dropped": 1}, {"missed_grasp": 1, "lifted_too_little": 1, "timeout": 1}]
    table = format_table(res, s)
    assert "| 0 | 0.500 | +0.000 | 3.1 | 1/3 | 1: missed_grasp, 2: dropped |" in table
    assert "failures: missed_grasp 2, dropped 1, lifted_too_little 1, timeout 1 (5 of 6 episodes)" in table
    assert plot_success_map(res, tmp_path / "map.png").stat().st_size > 1000


def test_positions_from_the_command_line() -> None:
    """Hydra overrides give positions as an inline list, a path or none (eval.py's structured config)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from s2robot.workflows.configs import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("eval", overrides=["positions=[[0.5,0.0],[0.6,-0.1]]"]))
        assert cfg.positions == [[0.5, 0.0], [0.6, -0.1]] and cfg.repeats == 3
        cfg = OmegaConf.to_object(compose("eval", overrides=["positions=none", "n_random_positions=4"]))
        assert (cfg.positions, cfg.n_random_positions) == ("none", 4)
        with pytest.raises(Exception, match="lies outside the workspace"):
            OmegaConf.to_object(compose("eval", overrides=["positions=[[0.5,0.5]]"]))
