"""Evaluate a BC checkpoint at cube positions with live S² encoding (see s2robot.workflows.evaluate).

    python scripts/eval.py checkpoint=runs/cube_pick/checkpoints/best      # 16 paper positions × 3 repeats
    python scripts/eval.py checkpoint=... positions=none n_random_positions=32 position_seed=1 repeats=1
    python scripts/eval.py checkpoint=... positions=my_positions.csv videos=-1

    torchrun --standalone --nproc_per_node=4 scripts/eval.py checkpoint=... n_envs=8   # 4 ranks share the waves

Writes <run>/eval/{results.json, table.md, success_map.png, videos/*.mp4} and prints the table. A run that stopped
resumes with the same command (finished waves of episodes are kept in <out>/.parts until results.json is written).
"""

from __future__ import annotations

import os

import hydra
from omegaconf import OmegaConf

from s2robot.common.stop import exit_on_stop
from s2robot.workflows.configs import register_configs
from s2robot.workflows.evaluate import EvalConfig, evaluate

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval")
def main(raw: EvalConfig) -> None:
    cfg: EvalConfig = OmegaConf.to_object(raw)
    report = evaluate(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun every rank returns the results; rank 0 shows them
        return
    print(report["outputs"]["dir"] + "/table.md")
    print(open(report["outputs"]["dir"] + "/table.md").read())
    print(f"results: {report['outputs']['dir']}/results.json · success map: {report['outputs']['dir']}"
          f"/success_map.png · videos: {len(report['outputs']['videos'])} in {report['outputs']['dir']}/videos")


if __name__ == "__main__":
    exit_on_stop(main)  # SIGTERM / Ctrl-C: a clean stop, its message, the signal's exit status
