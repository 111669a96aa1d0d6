"""MAE-pretrain a ViT on in-domain frames (MVP's recipe) and export it as an MVP-format checkpoint.

    python scripts/pretrain_mae.py                                   # configs/pretrain_mae.yaml: ViT-Ti
    python scripts/pretrain_mae.py data.stores=[demos/cube_pick.zarr] data.generator.n_frames=0
    python scripts/pretrain_mae.py model.variant=vits-mae-hoi export_name=null steps=20000  # on a GPU

Re-running the same command resumes from runs/<name>/last.pt (exactly: model, optimizer, schedule, RNG);
re-running it with steps=N at or below the checkpoint's step only exports that checkpoint.
With export_name set, the encoder lands in weights/<export_name>.pth (+ .json provenance), where
``EncoderConfig(variant=<export_name>, weights="auto")`` finds it.
"""

from __future__ import annotations

import shlex
import sys

import hydra
from omegaconf import OmegaConf

from s2robot.workflows.configs import register_configs
from s2robot.workflows.pretrain import PretrainConfig, pretrain_mae

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="pretrain_mae")
def main(raw: PretrainConfig) -> None:
    cfg: PretrainConfig = OmegaConf.to_object(raw)
    command = shlex.join(["python", "scripts/pretrain_mae.py", *sys.argv[1:]])
    result = pretrain_mae(cfg, command=command)
    h = result.history
    print(f"{result.run_dir}: step {result.step}, loss {h[0]:.4f} -> {sum(h[-50:]) / len(h[-50:]):.4f} "
          f"(mean of the last {len(h[-50:])} steps)")


if __name__ == "__main__":
    main()
