"""Evaluate a BC checkpoint at cube positions with live S² encoding (see s2robot.workflows.evaluate).

    python scripts/eval.py checkpoint=runs/cube_pick/checkpoints/best      # 16 paper positions × 3 repeats
    python scripts/eval.py checkpoint=... positions=none n_random_positions=32 position_seed=1 repeats=1
    python scripts/eval.py checkpoint=... positions=my_positions.csv videos=-1

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
