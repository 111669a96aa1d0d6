"""Record scripted-expert demos of the cube-pick task into a crash-safe zarr store.

    python scripts/record_demos.py n_episodes=120 workers=2 out=demos/cube_pick.zarr
    python scripts/record_demos.py resume=true        # after an interruption: appends until n_episodes
    python -m s2robot.store info demos/cube_pick.zarr # what was recorded
"""

from __future__ import annotations

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from s2robot.record import RecordConfig, record_demos
from s2robot.store import EpisodeStore, info_text

ConfigStore.instance().store(name="record_schema", node=RecordConfig)


@hydra.main(version_base="1.3", config_path="../configs", config_name="record")
def main(raw: RecordConfig) -> None:
    cfg: RecordConfig = OmegaConf.to_object(raw)
    path = record_demos(cfg)
    print(info_text(EpisodeStore.open(path)))


if __name__ == "__main__":
    main()
