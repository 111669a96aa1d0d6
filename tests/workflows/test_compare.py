"""Encoder comparison: table rows from reports, markdown and chart, missing weights fail fast, one smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from s2robot.vision.encoder import EncoderPlacement
from s2robot.workflows.compare import CompareConfig, compare_encoders
from s2robot.workflows.compare_report import comparison_rows, format_comparison, plot_comparison
from s2robot.workflows.configs import register_configs
from s2robot.workflows.pipeline import PipelineConfig
from s2robot.workflows.report import wilson_interval
from s2robot.workflows.train import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def fake_report(successes: int, random: bool = False, variant: str = "vitb-mae-egosoup",
                img_sizes: tuple[int, ...] = (224,), episodes: int = 16, readout: str = "cls") -> dict:
    encoder = {"variant": variant, "img_sizes": list(img_sizes), "params": 85_800_000, "gflops_per_frame": 35.1,
               "feature_dim": 768 * len(img_sizes), "readout": readout}
    return {"success_rate": successes / episodes, "successes": successes, "episodes": episodes,
            "weights_random": random, "encoder": encoder}


def test_rows_pool_seeds() -> None:
    """Mean and spread over seeds; the interval is Wilson's of all episodes pooled."""
    reports = {"mvp_vitb_s2": {0: fake_report(10, img_sizes=(224, 448)), 1: fake_report(7, img_sizes=(224, 448)),
                               2: fake_report(12, img_sizes=(224, 448))},
               "vitti_random": {0: fake_report(3, random=True, variant="vitti")}}
    s2, rnd = comparison_rows(reports)
    rates = np.array([10, 7, 12]) / 16
    assert s2["encoder"] == "mvp_vitb_s2" and s2["seeds"] == [0, 1, 2] and s2["img_sizes"] == [224, 448]
    assert s2["success_mean"] == pytest.approx(rates.mean())
    assert s2["success_std"] == pytest.approx(rates.std(ddof=1))
    assert (s2["success_min"], s2["success_max"]) == (7 / 16, 12 / 16)
    assert (s2["successes"], s2["episodes"]) == (29, 48)
    assert s2["ci95"] == pytest.approx(list(wilson_interval(29, 48)))
    assert s2["paper_success"] == 0.625 and s2["params_m"] == pytest.approx(85.8) and not s2["weights_random"]
    assert rnd["weights_random"] and rnd["success_std"] is None and rnd["paper_success"] is None
    assert rnd["ci95"] == pytest.approx(list(wilson_interval(3, 16)))
    grid = comparison_rows({"g": {0: fake_report(9, img_sizes=(224, 448), readout="cls+grid")}})[0]
    assert grid["readout"] == "cls+grid" and grid["paper_success"] is None  # the paper read CLS only
    held_out = fake_report(9, img_sizes=(224, 448)) | {"positions": {"set": "none", "n_random": 16}}
    assert comparison_rows({"h": {0: held_out}})[0]["paper_success"] is None  # the paper's number is for its 16


def with_episodes(report: dict, outcomes: list[bool]) -> dict:
    """A fake report with one episode per outcome at positions 0.. (repeat 0, seed 1000 + position)."""
    detail = [{"position": i, "repeat": 0, "seed": 1000 + i, "success": ok} for i, ok in enumerate(outcomes)]
    return report | {"episodes_detail": detail}


def test_paired_column_pools_seeds_against_the_reference(tmp_path: Path) -> None:
    """Each row minus its reference over the seeds both have, episodes matched per seed; known answer."""
    a0 = [True] * 10 + [False] * 6  # seed 0: A 10/16, B 4/16, every B success also an A success
    b0 = [True] * 4 + [False] * 12
    a1 = [True] * 8 + [False] * 8  # seed 1: A 8/16, B 8/16, disjoint
    b1 = [False] * 8 + [True] * 8
    reports = {"A": {0: with_episodes(fake_report(10), a0), 1: with_episodes(fake_report(8), a1)},
               "B": {0: with_episodes(fake_report(4), b0), 1: with_episodes(fake_report(8), b1),
                     2: with_episodes(fake_report(1), [True] + [False] * 15)}}
    a, b = comparison_rows(reports, references={"A": "B", "B": "B"})
    assert b["paired"] is None  # the reference row itself
    p = a["paired"]
    assert p["seeds"] == [0, 1] and p["n"] == 32  # seed 2 has no A evaluation: not paired
    assert (p["successes_a"], p["successes_b"], p["only_a"], p["only_b"]) == (18, 12, 14, 8)
    assert p["difference"] == pytest.approx(6 / 32) and p["ci95"][0] < p["difference"] < p["ci95"][1]
    md = format_comparison([a, b])
    assert "paired Δ vs reference" in md and "+18.8 [" in md and "| – |" in md
    assert p["per_seed"] == pytest.approx([6 / 16, 0.0]) and p["n_positions"] == 16
    lo, hi = p["ci95_positions"]  # positions resampled: the same position in both seeds drawn together
    assert lo < p["difference"] < hi
    assert "- A − B: +18.8 points, positions resampled [" in md and "per training seed 0: +37.5, 1: +0.0" in md
    assert "over 32 episodes; " in md
    plain, forest = plot_comparison([b], tmp_path / "one.png"), plot_comparison([a, b], tmp_path / "two.png")
    assert Image.open(forest).size[0] > Image.open(plain).size[0] + 400  # the paired panel beside the bars
    with pytest.raises(ValueError, match="reference row 'C' has no evaluations"):
        comparison_rows(reports, references={"A": "C"})


def test_table_and_chart(tmp_path: Path) -> None:
    """The markdown labels random-weight encoders; the chart is written."""
    rows = comparison_rows({"mvp_vitb": {0: fake_report(7), 1: fake_report(8)},
                            "vitti_random": {0: fake_report(2, random=True, variant="vitti")}})
    md = format_comparison(rows)
    assert sum(line.startswith("| ") for line in md.splitlines()) == 3  # header + 2 rows
    assert "vitti (**RANDOM weights**)" in md and "RANDOM weights: the encoder is not pretrained" in md
    assert "| mvp_vitb | vitb-mae-egosoup | 224² | cls (768) |" in md and "43.8" in md  # the paper's ViT-B number
    assert "RANDOM" not in format_comparison(rows[:1])
    png = plot_comparison(rows, tmp_path / "sub" / "c.png")
    assert png.stat().st_size > 5000


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="distinct"):
        CompareConfig(encoders=["mvp_vitb", "mvp_vitb"])
    with pytest.raises(ValueError, match="seeds"):
        CompareConfig(seeds=[])
    with pytest.raises(FileNotFoundError, match="no encoder config 'nope'"):
        CompareConfig(encoders=["nope"]).encoder_config("nope")


def test_encoder_overrides() -> None:
    """encoder_* fields and the readout override every encoder's yaml; None keeps it."""
    kept = CompareConfig().encoder_config("vitti_s2_random")
    grid = CompareConfig(placement=EncoderPlacement(dtype="float32")).encoder_config("vitti_s2_random", "cls+grid")
    assert (kept.readout, grid.readout, grid.dtype) == ("cls", "cls+grid", "float32")
    assert grid.feature_dim() == 5 * kept.feature_dim()  # CLS + 2×2 pooled patch grid
    with pytest.raises(ValueError, match="readouts must be distinct names"):
        CompareConfig(readouts=["max"])
    with pytest.raises(ValueError, match="readouts must be distinct names"):
        CompareConfig(readouts=["cls", "cls"])
    with pytest.raises(ValueError, match="reference 'vitti_mae' is not one of encoders"):
        CompareConfig(reference="vitti_mae")
    cfg = CompareConfig(readouts=["cls+grid", "cls"])
    assert cfg.run_name("vits_mae", 2, "cls+grid").endswith("-vits_mae-cls_grid-s2")
    assert cfg.label("vits_mae", "cls") == "vits_mae · cls" and CompareConfig().label("vits_mae", None) == "vits_mae"


def test_missing_weights_fail_before_any_work(tmp_path: Path) -> None:
    """An encoder without weights stops the comparison before demos are recorded or anything is trained."""
    base = PipelineConfig(train=TrainConfig(demos=str(tmp_path / "d.zarr"), runs_dir=str(tmp_path / "runs")))
    cfg = CompareConfig(base=base, encoders=["micro_s2_random", "mvp_vitb"], out=str(tmp_path / "cmp"))
    with pytest.raises(FileNotFoundError, match=r"(?s)\['mvp_vitb'\].*no weights found for encoder variant "
                                                r"'vitb-mae-egosoup'"):
        compare_encoders(cfg)
    assert not any(tmp_path.iterdir())


def compose_config(tmp: Path, name: str = "compare_encoders", extra: list[str] | None = None) -> CompareConfig:
    """configs/<name>.yaml with test_pipeline.py's tiny overrides, 2 micro encoders × 1 seed, then ``extra``."""
    register_configs()
    overrides = ["encoders=[micro_s2_random,micro_random]", "seeds=[0]", f"out={tmp / 'cmp'}",
                 "placement.dtype=float32", "policy@base.train.policy=tiny", "base.record.n_episodes=3",
                 "base.record.workers=1",
                 f"base.train.demos={tmp / 'demos.zarr'}", f"base.train.runs_dir={tmp / 'runs'}",
                 "base.train.name=t", "base.train.env.image_size=32", "base.train.steps=4",
                 "base.train.batch_size=16", "base.train.warmup_steps=2", "base.train.val_fraction=0",
                 "base.train.wandb.mode=disabled", "base.train.progress=false", "base.eval.n_envs=4",
                 "base.eval.max_steps=3", "base.eval.videos=0", "base.eval.wandb.mode=disabled",
                 "base.eval.progress=false", "base.record.noise_std=0", "base.train.env.joint_noise=0", *(extra or [])]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return OmegaConf.to_object(compose(name, overrides=overrides))


def test_compare_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two micro encoders × 1 seed end to end; a re-run retrains and re-evaluates nothing."""
    cfg = compose_config(tmp_path)
    result = compare_encoders(cfg)
    rows = result["rows"]
    assert [r["encoder"] for r in rows] == ["micro_s2_random", "micro_random"]
    assert [r["img_sizes"] for r in rows] == [[32, 64], [32]]
    assert all(r["weights_random"] and r["episodes"] == 48 and r["seeds"] == [0] for r in rows)  # 16 × 3 repeats
    assert rows[0]["gflops_per_frame"] == pytest.approx(5 * rows[1]["gflops_per_frame"])  # 1 + 4 tiles
    saved = json.loads(Path(result["outputs"]["json"]).read_text())
    assert saved["rows"] == rows and [r["run"] for r in saved["runs"]] == ["t-micro_s2_random-s0", "t-micro_random-s0"]
    assert all(r["checkpoint_step"] == 4 for r in saved["runs"])
    assert "RANDOM" in Path(result["outputs"]["md"]).read_text()
    assert Path(result["outputs"]["png"]).stat().st_size > 5000
    results = tmp_path / "runs" / "t-micro_random-s0" / "eval" / "results.json"
    stamp = results.stat().st_mtime_ns
    capsys.readouterr()
    again = compare_encoders(cfg)
    out = capsys.readouterr().out
    assert out.count("already trained for 4") == 2 and out.count("is up to date") == 2
    assert results.stat().st_mtime_ns == stamp and again["rows"] == rows
    # another execution is not another training run, but it is another evaluation: the saved results are not reused
    compare_encoders(compose_config(tmp_path, extra=["base.eval.executing.execute_steps=4"]))
    out = capsys.readouterr().out
    assert out.count("already trained for 4") == 2 and "is up to date" not in out
    ran = json.loads(results.read_text())["execution"]
    assert ran == {"execution": "receding", "execute_steps": 4, "checkpoint": {"execution": "receding",
                                                                               "execute_steps": 8}}


def test_in_domain_preset_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """configs/compare_in_domain.yaml on micro encoders: 2 readouts × 2 encoders at 2 positions × 3
    repeats, probes on rendered frames, every row paired with the reference; a re-run re-encodes, retrains and
    re-evaluates nothing."""
    overrides = ["encoders=[micro_s2_random,micro_random]", "reference=micro_random", "seeds=[1]",
                 "base.eval.positions=[[0.5,0.0],[0.55,-0.1]]",
                 "readouts=[cls+grid,cls]", "probe.generator.n_frames=40", "probe.generator.image_size=32",
                 "probe.generator.max_steps=20", "probe.generator.workers=1",
                 f"probe.generator.out={tmp_path / 'frames.zarr'}"]
    cfg = compose_config(tmp_path, "compare_in_domain", overrides)
    result = compare_encoders(cfg)
    rows = result["rows"]
    assert [r["encoder"] for r in rows] == ["micro_s2_random · cls+grid", "micro_random · cls+grid",
                                            "micro_s2_random · cls", "micro_random · cls"]
    assert [r["readout"] for r in rows] == ["cls+grid", "cls+grid", "cls", "cls"]
    assert all(r["seeds"] == [1] and r["episodes"] == 6 for r in rows)
    assert [r["paired"] is None for r in rows] == [False, True, False, True]
    assert rows[0]["paired"]["label_b"] == "micro_random · cls+grid" and rows[0]["paired"]["n"] == 6
    assert all(set(r["probe"]) == {"cube_pos", "fingertip_pos", "gripper"} for r in rows)
    md = Path(result["outputs"]["md"]).read_text()
    assert "cube probe R² / cm" in md and "fingertip probe R² / cm" in md and "| – |" in md
    runs = [r["run"] for r in json.loads(Path(result["outputs"]["json"]).read_text())["runs"]]
    assert runs == ["t-micro_s2_random-cls_grid-s1", "t-micro_random-cls_grid-s1", "t-micro_s2_random-cls-s1",
                    "t-micro_random-cls-s1"]
    first = json.loads(Path(result["outputs"]["json"]).read_text())
    assert all(r["seconds"] > 0 for r in first["runs"]) and first["run_seconds_total"] > 0
    assert not first["partial"] and "Partial" not in md
    capsys.readouterr()
    again = compare_encoders(cfg)
    out = capsys.readouterr().out
    assert out.count("already trained for 4") == 4 and out.count("is up to date") == 4
    second = json.loads(Path(again["outputs"]["json"]).read_text())  # the reused runs keep their time (+ ~0)
    assert second["run_seconds_total"] < 2 * first["run_seconds_total"]
    assert "probe: " not in out and again["rows"] == rows
    saved = json.loads((tmp_path / "cmp" / "probes.json").read_text())  # a changed encoder is probed again
    saved["fingerprints"]["micro_random · cls"] = "0" * 16
    (tmp_path / "cmp" / "probes.json").write_text(json.dumps(saved))
    from s2robot.workflows.compare import probe_rows

    probe_rows(cfg, progress=False)
    out = capsys.readouterr().out
    assert out.count("probe: ") == 1 and "probe: micro_random encoded" in out


def test_a_stopped_comparison_leaves_the_table_so_far(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After each run the table is rewritten with the rows evaluated so far, marked partial; a row is paired once its
    reference has an evaluation."""
    from s2robot.workflows import compare as C

    cfg = compose_config(tmp_path, "compare_encoders", ["reference=micro_random"])
    calls = []

    def fake(run_cfg: TrainConfig, eval_cfg: object, which: str) -> dict:
        calls.append(run_cfg.name)
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped")
        outcomes = [True] * 30 + [False] * 18
        return with_episodes(fake_report(30, random=True, variant="vit-micro", episodes=48), outcomes) | {
            "checkpoint": "c", "checkpoint_step": 4}

    monkeypatch.setattr(C, "train_and_evaluate", fake)
    monkeypatch.setattr(C, "record_demos", lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt):
        compare_encoders(cfg)
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["partial"] and [r["encoder"] for r in saved["rows"]] == ["micro_s2_random"]
    assert saved["rows"][0]["paired"] is None  # its reference has no evaluation yet
    assert (tmp_path / "cmp" / "comparison.md").read_text().startswith("**Partial: 1 of 2 runs done**")


def test_robustness_rows_pair_conditions_and_drops() -> None:
    """Per condition: pooled success, the paired difference from the reference, and the difference of the drops from
    clean (an encoder that loses nothing against one that loses everything: +100 points)."""
    from s2robot.workflows.compare_robustness import drop_difference, format_robustness_comparison, robustness_rows

    def res(successes: list[bool]) -> dict:
        eps = [{"position": i, "repeat": 0, "seed": 10 + i, "success": s, "cube_xy": [0.4 + 0.01 * i, 0.0]}
               for i, s in enumerate(successes)]
        return {"successes": sum(successes), "episodes": len(successes), "episodes_detail": eps}

    ok, bad = [True] * 12, [False] * 12
    steady = {0: {"none": res(ok), "dark": res(ok)}, 1: {"none": res(ok), "dark": res(ok)}}
    fragile = {0: {"none": res(ok), "dark": res(bad)}, 1: {"none": res(ok), "dark": res(bad)}}
    d = drop_difference(steady, fragile, "dark")
    assert d["difference"] == pytest.approx(1.0) and d["ci95_positions"][0] > 0 and d["n"] == 24
    rows = robustness_rows({"S2": steady, "big": fragile}, "big")
    assert [r["condition"] for r in rows] == ["none", "dark"]
    s2 = rows[1]["encoders"]["S2"]
    assert s2["success_rate"] == 1.0 and s2["vs_reference"]["difference"] == pytest.approx(1.0)
    assert rows[1]["encoders"]["big"]["drop"] == 1.0 and "vs_reference" not in rows[1]["encoders"]["big"]
    assert "drop_vs_reference" not in rows[0]["encoders"]["S2"]
    text = format_robustness_comparison(rows, "big")
    assert "| dark | 24/24 = 100.0% [86–100] | 0/24 = 0.0% [0–14] |" in text and "**better**" in text


def test_compare_runs_every_encoder_through_the_perturbation_suite(tmp_path: Path) -> None:
    """robustness=[...]: each run also goes through the suite on held-out positions, and the comparison writes which
    encoder keeps its success (robustness.{md,json,png})."""
    cfg = compose_config(tmp_path, extra=["reference=micro_random", "robustness=[light_intensity:high]",
                                          "robustness_positions=2", "base.eval.positions=[[0.5,0.0]]",
                                          "base.eval.repeats=1"])
    compare_encoders(cfg)
    saved = json.loads((tmp_path / "cmp" / "robustness.json").read_text())
    assert [r["condition"] for r in saved["rows"]] == ["none", "light_intensity:high"]
    cell = saved["rows"][1]["encoders"]["micro_s2_random"]
    assert cell["episodes"] == 2 and "vs_reference" in cell and "drop_vs_reference" in cell
    assert (tmp_path / "runs" / "t-micro_random-s0" / "robustness" / "robustness.md").is_file()
    assert (tmp_path / "cmp" / "robustness.png").stat().st_size > 2000
    with pytest.raises(ValueError, match="unknown variation factor"):
        compose_config(tmp_path, extra=["robustness=[glare:high]"])
