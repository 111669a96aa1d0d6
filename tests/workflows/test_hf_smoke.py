"""Smoke run of each transformers tower (DINOv2, SigLIP, CLIP; tiny, random weights) under S²: feature cache →
a few training steps on it → a short evaluation that encodes live frames with the same tower."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_demos

from s2robot.common.runlog import WandbConfig
from s2robot.data.store import EpisodeStore
from s2robot.policy.checkpoint import read_parts
from s2robot.policy.configuration import PolicyConfig
from s2robot.sim.env import EnvConfig
from s2robot.vision.encoder import EncoderConfig
from s2robot.workflows.cache import FeatureCacheConfig, cache_features
from s2robot.workflows.evaluate import EvalConfig, evaluate
from s2robot.workflows.train import TrainConfig, train

PRESETS = {"dinov2": "dinov2_micro_s2_random", "siglip": "siglip_micro_s2_random", "clip": "clip_micro_s2_random"}


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32-px synthetic demos shared by every tower (each caches its own features beside them)."""
    return make_demos(tmp_path_factory.mktemp("hf-demos") / "d.zarr", (12, 9, 14, 10), cubes=True)


@pytest.mark.parametrize("family", sorted(PRESETS))
def test_tower_caches_trains_and_evaluates(family: str, demos: Path, tmp_path: Path) -> None:
    encoder = EncoderConfig.from_name(PRESETS[family], device="cpu", dtype="float32")
    cache = cache_features(FeatureCacheConfig(encoder=encoder, demos=str(demos), batch_size=32), progress=False)
    store = EpisodeStore.open(cache)
    assert store.array("feat_front").shape == (45, encoder.feature_dim()) == (45, 64)
    assert store.attrs["encoder"]["variant"] == encoder.variant and store.attrs["weights_random"]
    built = cache.stat().st_mtime_ns

    cfg = TrainConfig(name=family, runs_dir=str(tmp_path / "runs"), encoder=encoder, demos=str(demos),
                      policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, ff_mult=2),
                      env=EnvConfig(image_size=32, max_steps=5), steps=4, batch_size=8, progress=False,
                      wandb=WandbConfig(mode="disabled"))
    last = train(cfg)
    parts = read_parts(last)
    assert parts["config"]["cache"]["path"] == str(cache) and cache.stat().st_mtime_ns == built  # reused, not rebuilt
    assert parts["encoder"]["config"]["variant"] == encoder.variant

    report = evaluate(EvalConfig(checkpoint=str(last), out=str(tmp_path / "eval"), positions=[[0.5, 0.0]], repeats=1,
                                 n_envs=0, videos=0, max_steps=2, wandb=WandbConfig(mode="disabled"), progress=False))
    assert report["episodes"] == 1 and report["checkpoint_step"] == 4
    assert report["encoder"]["fingerprint"] == store.attrs["encoder_fingerprint"]
    assert report["encoder"]["variant"] == encoder.variant and report["weights_random"]
