"""The arm env's options (``env.options``): typed, and checked when the env config is built, misspelt keys named."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from s2robot.real.env import FrankaEnv
from s2robot.real.options import ArmOptions
from s2robot.real.safety import SafetyConfig
from s2robot.sim.env import ARM_ENV_ID, EnvConfig
from s2robot.workflows.configs import ENV_PRESETS, register_configs

ROOT = Path(__file__).resolve().parents[2]


def test_a_misspelt_option_is_refused_when_the_env_config_is_built() -> None:
    """``env.options.hots`` fails as the config is built, naming the likely key and every valid one."""
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['hots'\] \(did you mean 'host'.*Valid keys: \["
                                         r"'camera_fps', 'camera_jitter_ms', 'camera_latency_ms', 'camera_sources', "
                                         r"'connect_timeout', 'home_q', 'host', 'rehearsal_look', 'render_size', "
                                         r"'safety', 'stall_timeout_s'\]"):
        EnvConfig(id=ARM_ENV_ID, options={"hots": "172.16.0.2"})


def test_a_misspelt_safety_field_is_refused_when_the_env_config_is_built() -> None:
    with pytest.raises(ValueError, match=r"env\.options\.safety has unknown key.*'relative_dynamics_factor'"):
        EnvConfig(id=ARM_ENV_ID, options={"safety": {"relative_dynamic_factor": 0.3}})


def test_a_misspelt_override_fails_when_hydra_builds_the_config() -> None:
    """The same from the command line: ``+env.options.hots=...`` fails while the config is composed."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"), \
            pytest.raises(ValueError, match="did you mean 'host'"):
        OmegaConf.to_object(compose("record", overrides=["env=franka", "+env.options.hots=172.16.0.2"]))


@pytest.mark.parametrize(("options", "match"), [
    ({"camera_sources": {"front": "webcam:0"}}, r"env\.options\.camera_sources\.front: unknown source"),
    ({"home_q": [0.0] * 6}, r"env\.options\.home_q"),
    ({"connect_timeout": 0}, r"env\.options\.connect_timeout"),
    ({"safety": {"max_joint_step": 0.0}}, r"safety\.max_joint_step"),
    ({"home_q": [0.0, 0.0, 0.0, -1.0, 0.0, 2.0, 0.0]}, r"home_q puts the .* outside safety\.workspace"),
    ({"rehearsal_look": "studio"}, r"rehearsal_look must be one of \['franky-sim', 'cube-pick'\]"),
    ({"host": "172.16.0.2", "rehearsal_look": "cube-pick"}, r"rehearsal_look='cube-pick' dresses the franky-sim"),
])
def test_bad_values_are_refused_naming_the_option(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EnvConfig(id=ARM_ENV_ID, options=options)


def test_start_noise_is_bounded_when_the_env_config_is_built() -> None:
    """joint_noise that puts the hand outside the workspace in most draws is refused at config time."""
    with pytest.raises(ValueError, match=r"joint_noise=0\.8 rad.*use joint_noise ≤"):
        EnvConfig(id=ARM_ENV_ID, joint_noise=0.8)
    EnvConfig(id=ARM_ENV_ID, joint_noise=0.02)


def test_the_presets_pass_and_the_simulated_scene_is_not_checked() -> None:
    for name in ("franka", "franka_sim"):
        EnvConfig(**ENV_PRESETS[name])
    EnvConfig(joint_noise=0.8)  # the simulated scene has no workspace box


def test_the_options_are_the_env_s_own_keyword_arguments() -> None:
    """ArmOptions' fields are FrankaEnv's keyword arguments that EnvConfig does not set, with the same defaults."""
    set_by_config = {f.name for f in fields(EnvConfig)} - {"id", "options"} | {"self", "render_mode"}
    params = {n: p.default for n, p in inspect.signature(FrankaEnv.__init__).parameters.items()
              if n not in set_by_config}
    assert list(params) == [f.name for f in fields(ArmOptions)]
    defaults = ArmOptions()
    for name, default in params.items():
        expected = SafetyConfig() if name == "safety" else default
        assert getattr(defaults, name) == expected, name
