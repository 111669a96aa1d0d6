"""Probes: ridge recovers a known linear relation, episode-wise splits, readouts, the end-to-end table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s2robot.sim.frames import FrameDataConfig, GeneratorConfig
from s2robot.vision.encoder import EncoderConfig, EncoderPlacement, FrozenS2Encoder
from s2robot.workflows.probe import (
    ProbeConfig,
    encode_readouts,
    error_cm,
    fit_ridge,
    probe,
    r2_score,
    reconstruction_r2,
    run_probes,
    split_groups,
)


def test_known_linear_relation_gives_r2_one() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 20)) * rng.uniform(0.1, 10, 20)  # unequal feature scales: standardization matters
    w = rng.normal(size=(20, 3))
    labels = {"pos": 0.01 * (x @ w) + 0.5, "noise": rng.normal(size=(400, 1))}
    res = probe(x, labels, np.arange(400) // 10)
    assert res["pos"]["r2"] > 0.999 and res["pos"]["err_cm"] < 0.5
    assert res["noise"]["r2"] < 0.1  # nothing to find: no fake signal


def test_more_features_than_frames_uses_the_dual_form() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 200)), rng.normal(size=(30, 2))
    model = fit_ridge(x, y, alpha=1e-6)
    assert model.weight.shape == (200, 2) and np.allclose(model.predict(x), y, atol=1e-3)
    x_small = x[:, :10]
    direct = np.linalg.lstsq(np.c_[(x_small - x_small.mean(0)) / x_small.std(0), np.ones(30)], y, rcond=None)[0]
    primal = fit_ridge(x_small, y, alpha=0.0)
    assert np.allclose(primal.predict(x_small), np.c_[(x_small - x_small.mean(0)) / x_small.std(0), np.ones(30)]
                       @ direct, atol=1e-6)


def test_scores_and_splits() -> None:
    y = np.array([[0.0, 0.0], [0.1, 0.0], [0.2, 0.0]])
    assert r2_score(y, np.repeat(y.mean(0, keepdims=True), 3, 0)) == pytest.approx(0.0)
    assert r2_score(y, y) == 1.0 and error_cm(y, y + np.array([0.03, 0.04])) == pytest.approx(5.0)
    groups = np.repeat(np.arange(8), 5)
    train, test = split_groups(groups, 0.25)
    assert len(test) == 10 and not set(groups[train]) & set(groups[test])
    assert sorted(np.r_[train, test].tolist()) == list(range(40))
    with pytest.raises(ValueError, match="2 episodes"):
        probe(np.zeros((5, 2)), {"a": np.zeros((5, 1))}, np.zeros(5))


def test_readouts_equal_the_encoders_own() -> None:
    frames = np.random.default_rng(2).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    cfg = EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32, 64], grid_size=2, dtype="float32")
    feats = encode_readouts(FrozenS2Encoder(cfg), frames, ["cls", "mean", "cls+grid"], batch_size=2)
    for readout, f in feats.items():
        own = FrozenS2Encoder(EncoderConfig(**{**cfg.__dict__, "readout": readout}))(frames).numpy()
        assert np.allclose(f, own, atol=1e-6), readout


def test_reconstruction_of_a_linear_map_and_of_independent_features() -> None:
    """R² ≈ 1 when the target is a known linear map of the source (plus a little noise), ≈ 0 when independent;
    one-way maps are not symmetric (a 4-D source cannot rebuild a 24-D target)."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 25)  # 40 episodes × 25 frames
    source = rng.normal(size=(1000, 24))
    target = source @ rng.normal(size=(24, 16)) + 1e-3 * rng.normal(size=(1000, 16)) + 5.0
    linear = reconstruction_r2(source, target, groups)
    assert linear["r2"] > 0.999 and linear["dims"] == 16
    independent = reconstruction_r2(source, rng.normal(size=(1000, 16)), groups)
    assert abs(independent["r2"]) < 0.05
    narrow = reconstruction_r2(source[:, :4], source, groups)
    assert 0.1 < narrow["r2"] < 0.3  # 4 of 24 independent dimensions: R² 1 on those, ~0 on the rest
    constant = np.concatenate([target, np.ones((1000, 1))], axis=1)
    assert reconstruction_r2(source, constant, groups)["dims"] == 16  # a constant dimension has no R²
    with pytest.raises(ValueError, match="one row per frame"):
        reconstruction_r2(source, target[:10], groups)
    with pytest.raises(ValueError, match="every one of the 3 target dimensions is constant"):
        reconstruction_r2(source, np.full((1000, 3), 2.0), groups)


def test_reconstruct_pairs_validated() -> None:
    with pytest.raises(ValueError, match="reconstruct pairs"):
        ProbeConfig(encoders=["a", "b"], reconstruct=[["a", "c"]])
    with pytest.raises(ValueError, match="reconstruct pairs"):
        ProbeConfig(encoders=["a", "b"], reconstruct=[["a", "a"]])
    with pytest.raises(ValueError, match="reconstruct_splits must be ≥ 1"):
        ProbeConfig(encoders=["a", "b"], reconstruct=[["a", "b"]], reconstruct_splits=0)


def test_probe_script_end_to_end(tmp_path: Path) -> None:
    gen = GeneratorConfig(n_frames=60, image_size=32, max_steps=20, workers=1, out=str(tmp_path / "g.zarr"))
    cfg = ProbeConfig(encoders=["micro_s2_random", "micro_random", "mvp_vitb"], readouts=["cls", "mean"],
                      data=FrameDataConfig(generator=gen), out=str(tmp_path / "probe.json"),
                      placement=EncoderPlacement(device="cpu", dtype="float32"),
                      reconstruct=[["micro_s2_random", "micro_random"], ["micro_random", "micro_s2_random"],
                                   ["micro_random", "mvp_vitb"]])
    table, path = run_probes(cfg, progress=False)
    result = json.loads(path.read_text())
    assert [(r["encoder"], r["readout"]) for r in result["rows"]] == [
        ("micro_s2_random", "cls"), ("micro_s2_random", "mean"), ("micro_random", "cls"), ("micro_random", "mean")]
    recon = result["reconstruction"]  # the pair with the skipped encoder is left out
    assert [(r["source"], r["target"], r["readout"]) for r in recon] == [
        ("micro_s2_random", "micro_random", "cls"), ("micro_s2_random", "micro_random", "mean"),
        ("micro_random", "micro_s2_random", "cls"), ("micro_random", "micro_s2_random", "mean")]
    assert all(-1 < r["r2"] <= 1 for r in recon) and recon[0]["source_dim"] == 2 * recon[2]["source_dim"]
    assert all(len(r["r2_splits"]) == 3 and r["r2_splits"][0] == r["r2"] for r in recon)
    assert all(r["r2_min"] <= r["r2_mean"] <= r["r2_max"] for r in recon)
    assert "| micro_s2_random → micro_random | cls |" in table
    assert result["skipped"][0]["encoder"] == "mvp_vitb" and "mvp_vitb" in table
    assert set(result["rows"][0]["targets"]) == {"cube_pos", "fingertip_pos", "gripper"}
    assert result["n_train"] + result["n_test"] == result["n_frames"] >= 60
    assert "| micro_s2_random | random | 32+64 | cls | 64 |" in table
    assert path.with_suffix(".md").read_text().startswith("| encoder")


def test_probes_under_a_scene_variation(tmp_path: Path) -> None:
    """variations=[...]: the same episodes rendered in the varied scene are probed with a fit on clean frames and one
    on the varied frames; a physical variation (other episodes) and stores are refused."""
    gen = GeneratorConfig(n_frames=60, image_size=32, max_steps=20, workers=1, out=str(tmp_path / "g.zarr"))
    cfg = ProbeConfig(encoders=["micro_random"], readouts=["cls"], data=FrameDataConfig(generator=gen),
                      out=str(tmp_path / "probe.json"), placement=EncoderPlacement(device="cpu", dtype="float32"),
                      variations=["light_intensity:high"])
    table, path = run_probes(cfg, progress=False)
    rows = json.loads(path.read_text())["variations"]
    assert [(r["encoder"], r["readout"], r["variation"]) for r in rows] == [("micro_random", "cls",
                                                                             "light_intensity:high")]
    assert set(rows[0]["targets"]["cube_pos"]) == {"transfer", "within"}
    assert (tmp_path / "g-light_intensity_high.zarr").is_dir() and "fit clean" in table
    with pytest.raises(ValueError, match="changed the episodes themselves"):
        run_probes(ProbeConfig(encoders=["micro_random"], readouts=["cls"], data=FrameDataConfig(generator=gen),
                               out=str(tmp_path / "p2.json"), variations=["cube_size:high"]),
                   progress=False)
    with pytest.raises(ValueError, match=r"set data\.generator\.n_frames > 0"):
        ProbeConfig(variations=["light_intensity:high"])
