"""Evaluate a BC checkpoint clean and under every scene perturbation, on the same episodes
(see s2robot.workflows.robustness).

    python scripts/robustness.py checkpoint=runs/make_run120_ti112/checkpoints/last    # 48 held-out episodes each
    python scripts/robustness.py checkpoint=... 'levels=[high]' 'groups=[visual]'
    python scripts/robustness.py checkpoint=... 'conditions=[light_intensity:high,camera_pose:high]'

Writes <run>/robustness/{robustness.md, robustness.json, robustness.png, robustness_frames.png} and one evaluation
folder per condition (reused by a re-run), and prints the table.
"""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf

from s2robot.workflows.configs import register_configs
from s2robot.workflows.robustness import RobustnessConfig, run_robustness

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="robustness")
def main(raw: RobustnessConfig) -> None:
    run_robustness(OmegaConf.to_object(raw))


if __name__ == "__main__":
    main()
