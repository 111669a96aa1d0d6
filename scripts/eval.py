"""Evaluate a BC checkpoint at the 16 cube positions with live S² encoding (see s2robot.workflows.evaluate).

    python scripts/eval.py checkpoint=runs/cube_pick/checkpoints/best
    python scripts/eval.py checkpoint=... repeats=3 joint_noise=0.02 videos=-1

Writes <run>/eval/{results.json, table.md, success_map.png, videos/*.mp4} and prints the table.
"""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf

from s2robot.workflows.configs import register_configs
from s2robot.workflows.evaluate import EvalConfig, evaluate

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(raw: EvalConfig) -> None:
    cfg: EvalConfig = OmegaConf.to_object(raw)
    report = evaluate(cfg)
    print(report["outputs"]["dir"] + "/table.md")
    print(open(report["outputs"]["dir"] + "/table.md").read())
    print(f"results: {report['outputs']['dir']}/results.json · success map: {report['outputs']['dir']}"
          f"/success_map.png · videos: {len(report['outputs']['videos'])} in {report['outputs']['dir']}/videos")


if __name__ == "__main__":
    main()
