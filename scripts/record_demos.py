"""Record scripted-expert demos of the cube-pick task into a crash-safe zarr store.

    python scripts/record_demos.py n_episodes=120 workers=2 out=demos/cube_pick.zarr
    python scripts/record_demos.py resume=true        # after an interruption: appends until n_episodes
    python scripts/record_demos.py variation=standard out=demos/varied.zarr    # every episode in another scene
    python scripts/record_demos.py env=franka_sim controller=scripted_operator n_episodes=10 keep_failures=true \
        max_attempts=10 out=demos/teleop_rehearsal.zarr   # the teleop rehearsed: a script presses its keys
    python -m s2robot.workflows.store info demos/cube_pick.zarr # what was recorded
"""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf

from s2robot.common.stop import exit_on_stop
from s2robot.data.store import EpisodeStore
from s2robot.workflows.configs import register_configs
from s2robot.workflows.record import RecordConfig, record_demos
from s2robot.workflows.store import info_text

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="record")
def main(raw: RecordConfig) -> None:
    cfg: RecordConfig = OmegaConf.to_object(raw)
    path = record_demos(cfg)
    print(info_text(EpisodeStore.open(path)))


if __name__ == "__main__":
    exit_on_stop(main)  # SIGTERM / Ctrl-C: a clean stop, its message, the signal's exit status
