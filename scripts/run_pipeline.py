"""`make run`: record demos → cache S² features → train the BC policy → evaluate (16 positions × 3 repeats).

    python scripts/run_pipeline.py                                   # the embedded CPU default (configs/pipeline.yaml)
    python scripts/run_pipeline.py encoder@train.encoder=mvp_vitb_s2 train.encoder.readout=cls record.n_episodes=120 \
        train.name=vitb_s2 train.demos=demos/cube_pick.zarr                # the paper setting, on a GPU

Re-running continues where it stopped (demos, cache and training are resumable); the evaluation reruns.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import OmegaConf

from s2robot.workflows.configs import register_configs
from s2robot.workflows.pipeline import PipelineConfig, run_pipeline

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="pipeline")
def main(raw: PipelineConfig) -> None:
    cfg: PipelineConfig = OmegaConf.to_object(raw)
    report = run_pipeline(cfg)
    out = Path(report["outputs"]["dir"])
    print("\n" + (out / "table.md").read_text())
    if report["weights_random"]:
        print("NOTE: the encoder has RANDOM weights (not pretrained): this success rate says nothing about "
              "pretrained features.")
    print(f"checkpoint:  {report['checkpoint']}\nresults:     {out / 'results.json'}\n"
          f"success map: {out / 'success_map.png'}\nvideos:      {out / 'videos'} ({len(report['outputs']['videos'])})")


if __name__ == "__main__":
    main()
