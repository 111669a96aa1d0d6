"""Encode every frame of a demo store with a frozen S² encoder into a feature cache (see s2robot.workflows.cache).

    python scripts/cache_features.py demos=demos/cube_pick.zarr encoder=mvp_vitb_s2
    torchrun --standalone --nproc_per_node=8 scripts/cache_features.py demos=demos/cube_pick.zarr encoder=mvp_vitb_s2

A re-run with the same demos and encoder does nothing; an interrupted run resumes; a stale cache is rebuilt. Under
torchrun every rank encodes a share and rank 0 merges them into the same cache (several nodes: docs/cluster.md).
"""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf

from s2robot.workflows.cache import FeatureCacheConfig, cache_features
from s2robot.workflows.configs import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="cache_features")
def main(raw: FeatureCacheConfig) -> None:
    cfg: FeatureCacheConfig = OmegaConf.to_object(raw)
    print(f"feature cache: {cache_features(cfg)}")


if __name__ == "__main__":
    main()
