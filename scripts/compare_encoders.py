"""The S² paper's Table 6: cache, train and evaluate several frozen encoders on the same demos and seeds.

    python scripts/compare_encoders.py                                   # the paper's three MVP encoders (GPU)
    python scripts/compare_encoders.py 'seeds=[0,1,2]'                   # 3 training seeds per encoder
    python scripts/compare_encoders.py 'encoders=[vitti_random,vitti_s2_random]' base.record.n_episodes=40 \
        base.train.demos=demos/make_run.zarr base.train.steps=1500      # CPU stand-ins (see the yaml header)

Writes <out>/comparison.{md,json,png}; every run lives in runs/<base.train.name>-<encoder>-s<seed>/.
Re-running skips finished training and up-to-date evaluations.
"""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf

from s2robot.workflows.compare import CompareConfig, compare_encoders
from s2robot.workflows.configs import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="compare_encoders")
def main(raw: CompareConfig) -> None:
    cfg: CompareConfig = OmegaConf.to_object(raw)
    result = compare_encoders(cfg)
    print("\n" + result["table"])
    out = result["outputs"]
    print(f"\ntable: {out['md']}\nresults: {out['json']}\nchart: {out['png']}")


if __name__ == "__main__":
    main()
