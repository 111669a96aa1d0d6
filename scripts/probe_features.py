"""Linear probes of frozen encoders on frames with privileged state: one comparison table (markdown + JSON).

    python scripts/probe_features.py                                    # configs/probe_features.yaml
    python scripts/probe_features.py encoders=[vitti_random,vitti_mae] readouts=[cls] data.generator.n_frames=500

For every encoder preset (``s2robot/vision/presets.py``) and readout: ridge probes of cube position,
fingertip position and gripper opening, fit on 75% of the episodes and scored on the rest (R², cm).
Encoders whose weights are not on this machine (e.g. official MVP files) are listed as skipped.
"""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf

from s2robot.workflows.configs import register_configs
from s2robot.workflows.probe import ProbeConfig, run_probes

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="probe_features")
def main(raw: ProbeConfig) -> None:
    cfg: ProbeConfig = OmegaConf.to_object(raw)
    table, path = run_probes(cfg)
    print(table)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
