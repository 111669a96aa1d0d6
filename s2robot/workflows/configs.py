"""Hydra wiring of every entry point: the dataclass schemas and the named presets of the ``encoder``, ``policy``
and ``env`` groups, registered from code (``configs/*.yaml`` hold only what differs for an entry point)."""

from __future__ import annotations

from typing import Any

from s2robot.policy.configuration import POLICY_PRESETS
from s2robot.sim.env import ARM_ENV_ID
from s2robot.vision.presets import ENCODER_PRESETS
from s2robot.workflows.cache import FeatureCacheConfig
from s2robot.workflows.compare import CompareConfig
from s2robot.workflows.distill import DistillConfig
from s2robot.workflows.evaluate import EvalConfig
from s2robot.workflows.pipeline import PipelineConfig
from s2robot.workflows.pretrain import PretrainConfig
from s2robot.workflows.probe import ProbeConfig
from s2robot.workflows.record import RecordConfig
from s2robot.workflows.robustness import RobustnessConfig
from s2robot.workflows.serve import ServeConfig
from s2robot.workflows.train import TrainConfig

# config name (configs/<name>.yaml, scripts use "<name>_schema") -> the dataclass that holds its defaults
ENTRY_POINTS: dict[str, type] = {
    "record": RecordConfig,
    "cache_features": FeatureCacheConfig,
    "train_bc": TrainConfig,
    "eval": EvalConfig,
    "pipeline": PipelineConfig,
    "paper": PipelineConfig,  # the paper's protocol, scripts/run_pipeline.py --config-name paper
    "rehearse": PipelineConfig,  # make run on the arm in franky-sim: scripts/run_pipeline.py --config-name rehearse
    "compare_encoders": CompareConfig,
    "compare_in_domain": CompareConfig,  # the in-domain MAE encoders' Table 6, --config-name compare_in_domain
    "pretrain_mae": PretrainConfig,
    "probe_features": ProbeConfig,
    "robustness": RobustnessConfig,
    "distill_invariance": DistillConfig,
    "serve": ServeConfig,
}
ENV_PRESETS: dict[str, dict[str, Any]] = {
    "cube_pick": {},  # EnvConfig's defaults: the simulated cube-pick task
    # The Franka arm through franky (README, "The real arm"): the franky-sim rehearsal, and a real arm (set its host and
    # cameras: env.options.host=<FCI address> env.options.camera_sources.front=realsense:<serial>).
    "franka_sim": {"id": ARM_ENV_ID, "options": {"host": "franky-sim"}},
    "franka": {"id": ARM_ENV_ID, "options": {"host": "172.16.0.2", "camera_sources": {"front": "realsense"}}},
}
GROUPS: dict[str, dict[str, dict[str, Any]]] = {"encoder": ENCODER_PRESETS, "policy": POLICY_PRESETS,
                                                "env": ENV_PRESETS}


def register_configs() -> None:
    """Put the schemas and presets into hydra's ConfigStore (scripts call this before ``hydra.main``)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, schema in ENTRY_POINTS.items():
        store.store(name=f"{name}_schema", node=schema)
    for group, presets in GROUPS.items():
        for name, values in presets.items():
            store.store(group=group, name=name, node=dict(values))
