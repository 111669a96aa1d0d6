"""Distil a frozen encoder for invariance to the scene: a student gives, for frames of varied scenes, the teacher's
tokens of the same states as built (see s2robot.workflows.distill).

    python scripts/distill_invariance.py                     # configs/distill_invariance.yaml: make run's ViT-Ti
    python scripts/distill_invariance.py teacher=vitti-s2mae-cubepick 's2_img_sizes=[224,448]' \
        'data.generator.image_size=224' export_name=null name=inv-224

Re-running the same command resumes from runs/<name>/last.pt. With export_name set, the student lands in
weights/<export_name>.pth (+ .json provenance), where an encoder preset of that variant finds it.
"""

from __future__ import annotations

import shlex
import sys

import hydra
from omegaconf import OmegaConf

from s2robot.workflows.configs import register_configs
from s2robot.workflows.distill import DistillConfig, distill

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="distill_invariance")
def main(raw: DistillConfig) -> None:
    cfg: DistillConfig = OmegaConf.to_object(raw)
    result = distill(cfg, command=shlex.join(["python", "scripts/distill_invariance.py", *sys.argv[1:]]))
    h = result["history"]
    print(f"{result['run_dir']}: step {result['step']}, loss {h[0]:.4f} -> {sum(h[-50:]) / len(h[-50:]):.4f} "
          f"(mean of the last {len(h[-50:])} steps)")


if __name__ == "__main__":
    main()
