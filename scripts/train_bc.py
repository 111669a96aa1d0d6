"""Train the chunk-transformer BC policy from a feature cache (see s2robot.workflows.train).

    python scripts/train_bc.py name=vitb_s2 encoder=mvp_vitb_s2 demos=demos/cube_pick.zarr
    python scripts/train_bc.py name=vitb_s2 encoder=mvp_vitb_s2 demos=demos/cube_pick.zarr   # resumes
    torchrun --nproc_per_node=2 scripts/train_bc.py ...                                    # DDP
    python scripts/train_bc.py ... eval_every=1000      # + success at the 16 positions; best/ by success

Checkpoints land in runs/<name>/checkpoints/{last,best}/; metrics in runs/<name>/metrics.jsonl and wandb.
"""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf

from s2robot.workflows.configs import register_configs
from s2robot.workflows.train import TrainConfig, train

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="train_bc")
def main(raw: TrainConfig) -> None:
    cfg: TrainConfig = OmegaConf.to_object(raw)
    evaluator = None
    if cfg.eval_every:  # success at the 16 positions every eval_every steps; best/ by success rate
        from s2robot.workflows.evaluate import periodic_evaluator

        evaluator = periodic_evaluator(cfg.encoder, cfg.env)
    train(cfg, evaluator)


if __name__ == "__main__":
    main()
