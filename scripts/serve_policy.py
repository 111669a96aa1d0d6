"""Serve a BC checkpoint's encoder and policy to a robot PC without a GPU (see s2robot.workflows.serve).

    python scripts/serve_policy.py checkpoint=runs/cube_pick/checkpoints/last bind=tcp://*:5555    # the GPU machine
    python scripts/eval.py checkpoint=runs/cube_pick/checkpoints/last server=tcp://gpu-host:5555   # the robot PC

The robot PC runs the episodes and sends each step's newest frames and proprio; this process encodes them, runs the
policy and sends the actions back, until Ctrl-C. Install pyzmq on both: pip install 's2robot[remote]'.
"""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf

from s2robot.workflows.configs import register_configs
from s2robot.workflows.serve import ServeConfig, serve_policy

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="serve")
def main(raw: ServeConfig) -> None:
    try:
        serve_policy(OmegaConf.to_object(raw))
    except KeyboardInterrupt:
        print("policy server stopped")


if __name__ == "__main__":
    main()
