"""Encode every frame of a demo store with a frozen S² encoder into a feature cache (see s2robot.features).

    python scripts/cache_features.py demos=demos/cube_pick.zarr encoder=mvp_vitb_s2 encoder.dtype=bfloat16

A re-run with the same demos and encoder does nothing; an interrupted run resumes; a stale cache is rebuilt.
"""

from __future__ import annotations

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from s2robot.encoder import FrozenS2Encoder
from s2robot.features import FeatureCacheConfig, build_feature_cache

ConfigStore.instance().store(name="cache_features_schema", node=FeatureCacheConfig)


@hydra.main(version_base="1.3", config_path="../configs", config_name="cache_features")
def main(raw: FeatureCacheConfig) -> None:
    cfg: FeatureCacheConfig = OmegaConf.to_object(raw)
    encoder = FrozenS2Encoder(cfg.encoder)
    print(f"encoder {cfg.encoder.variant} {encoder.img_sizes} on {encoder.device} ({cfg.encoder.dtype}), "
          f"weights: {encoder.weights.label()}, fingerprint {encoder.fingerprint}")
    path = build_feature_cache(cfg.demos, encoder, cfg.out, cfg.batch_size)
    print(f"feature cache: {path}")


if __name__ == "__main__":
    main()
