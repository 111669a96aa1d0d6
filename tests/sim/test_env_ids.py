"""Env config: only s2robot's own registered environments are made (a config never picks a module to import), with
the same defaults as the envs themselves."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import MISSING
from pathlib import Path

import pytest
from helpers import import_probe
from omegaconf import OmegaConf

from s2robot.sim.env import ENV_IDS, EnvConfig, make_env

PROBE = "s2robot_import_probe"


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on sys.path that leaves a file behind if anything imports it."""
    flag = import_probe(tmp_path, PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield flag
    sys.modules.pop(PROBE, None)


@pytest.mark.parametrize("env_id", [f"{PROBE}:s2robot/CubePick-v0", f"{PROBE}:CubePick-v0", "CartPole-v1",
                                    "s2robot/CubePick-v9"])
def test_an_env_id_that_is_not_s2robots_is_refused_before_any_import(env_id: str, probe: Path) -> None:
    """gymnasium reads ``module:id`` as "import module, then make id": an id from a config (a checkpoint's env.json)
    would choose code to run. Only s2robot's registered ids pass, at the config and again in make_env."""
    allowed = r"s2robot/CubePick-v0.*s2robot/FrankaReal-v0"
    with pytest.raises(ValueError, match=rf"env id {env_id!r} is not one of s2robot's environments.*{allowed}"):
        EnvConfig(id=env_id)
    with pytest.raises(ValueError, match="is not one of s2robot's environments"):  # as a checkpoint's env.json loads
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EnvConfig), {"id": env_id}))
    cfg = EnvConfig(image_size=32)
    cfg.id = env_id  # a field set after construction is checked where the env is made
    with pytest.raises(ValueError, match="is not one of s2robot's environments"):
        make_env(cfg, render_mode=None)
    assert not probe.exists() and PROBE not in sys.modules


def test_s2robots_own_ids_are_made() -> None:
    """ENV_IDS are exactly the ids ``envs`` and ``s2robot.real`` register, and the simulated one is made."""
    import envs
    import s2robot.real

    assert set(ENV_IDS) == {envs.CUBE_PICK_ID, s2robot.real.FRANKA_REAL_ID}
    env = make_env(EnvConfig(image_size=32, max_steps=2), render_mode=None)
    try:
        assert env.spec is not None and env.spec.id == "s2robot/CubePick-v0"
    finally:
        env.close()


def test_every_process_that_imports_s2robot_can_make_the_arm_env() -> None:
    """A fresh interpreter that imports only the sim layer (as a spawned evaluation or recording worker does) finds
    the arm env registered from its own layer, by entry-point name: nothing of the arm or franky is loaded by it."""
    code = ("import sys, gymnasium; from s2robot.sim.env import ARM_ENV_ID; "
            "print(gymnasium.spec(ARM_ENV_ID).entry_point, sorted(m for m in sys.modules "
            "if m.startswith(('s2robot.real.', 'franky', 'envs'))))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["s2robot.real.env:FrankaEnv", "[]"]


def test_the_envs_defaults_are_envconfigs() -> None:
    """One default per setting: every EnvConfig field that the simulated env and the arm env take has the same
    default there (a raw ``CubePickEnv()`` behaves as ``make_env(EnvConfig())``)."""
    import inspect
    from dataclasses import fields

    from envs import CubePickEnv
    from s2robot.real.env import FrankaEnv

    config = {f.name: f.default for f in fields(EnvConfig) if f.default is not MISSING}
    for env in (CubePickEnv, FrankaEnv):
        params = inspect.signature(env.__init__).parameters
        differ = {k: (v, params[k].default) for k, v in config.items() if k in params and params[k].default != v}
        assert not differ, (env.__name__, differ)


def test_the_simulated_env_s_options_are_checked_when_the_config_is_built() -> None:
    """A misspelt option of the simulated env fails as the config is built, naming the likely key and the valid ones
    (its constructor's keywords that EnvConfig does not set); a valid one reaches the env."""
    with pytest.raises(ValueError, match=r"env\.options \(of s2robot/CubePick-v0\) has unknown key\(s\) "
                                         r"\['action_dely'\] \(did you mean 'action_delay'.*\['action_delay', "
                                         r"'render_size', 'scene_index'\]"):
        EnvConfig(options={"action_dely": 1})
    env = make_env(EnvConfig(image_size=32, max_steps=2, options={"action_delay": 1}), render_mode=None)
    try:
        assert env.unwrapped.action_delay == 1
    finally:
        env.close()
