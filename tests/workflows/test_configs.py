"""One source of defaults: every entry point's yaml holds only what differs from its dataclass, and composes to
exactly the dataclass merged with the presets and overrides it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from s2robot.policy.configuration import PolicyConfig
from s2robot.sim.env import EnvConfig
from s2robot.sim.frames import GeneratorConfig
from s2robot.vision.encoder import EncoderConfig
from s2robot.workflows.cache import FeatureCacheConfig
from s2robot.workflows.compare import CompareConfig
from s2robot.workflows.configs import ENTRY_POINTS, GROUPS, register_configs
from s2robot.workflows.distill import DistillConfig
from s2robot.workflows.evaluate import EvalConfig
from s2robot.workflows.pipeline import PipelineConfig
from s2robot.workflows.pretrain import PretrainConfig
from s2robot.workflows.probe import ProbeConfig
from s2robot.workflows.record import RecordConfig
from s2robot.workflows.robustness import RobustnessConfig
from s2robot.workflows.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
GROUP_SCHEMAS = {"encoder": EncoderConfig, "policy": PolicyConfig, "env": EnvConfig}


def leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every leaf of a yaml mapping."""
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), node)]


def expected_config(name: str) -> tuple[Any, dict]:
    """The dataclass, with the presets (and recipes) the yaml's defaults list selects and the yaml's own values
    merged in."""
    raw = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    cfg = OmegaConf.merge(OmegaConf.structured(ENTRY_POINTS[name]), _selected(raw.pop("defaults"), ""))
    return OmegaConf.merge(cfg, raw), raw


def _selected(defaults: list, base: str, overrides: dict[tuple[str, str], str] | None = None) -> Any:
    """What a defaults list's group entries put into the config, packages relative to ``base``; a ``recipe`` is a
    yaml file of configs/recipe/ with its own defaults list and values. ``override /group@package: option`` swaps
    the option a nested list (a recipe's) picks for that group and package."""
    overrides = dict(overrides or {})
    entries = []
    for entry in defaults:
        if isinstance(entry, dict):
            (key, option), = entry.items()
            is_override = key.startswith("override ")
            group, _, package = key.removeprefix("override ").lstrip("/").partition("@")
            path = ".".join(p for p in (base, "" if package == "_here_" else package or group) if p)
            if is_override:
                overrides[(group, path)] = option
            else:
                entries.append((group, path, option))
    cfg = OmegaConf.create({})
    for group, path, option in entries:
        option = overrides.get((group, path), option)
        if group in GROUPS:
            cfg = OmegaConf.merge(cfg, _at(path, GROUPS[group][option]))
        elif group == "recipe":
            recipe = OmegaConf.to_container(OmegaConf.load(CONFIGS / "recipe" / f"{option}.yaml"))
            cfg = OmegaConf.merge(cfg, _selected(recipe.pop("defaults", []), path, overrides), _at(path, recipe))
    return cfg


def _at(path: str, value: dict) -> Any:
    node: Any = value
    for part in reversed([p for p in path.split(".") if p]):
        node = {part: node}
    return OmegaConf.create(node)


def test_recipe_holds_only_what_differs() -> None:
    """configs/recipe/*.yaml, like the entry points' yaml, states only what differs from PipelineConfig."""
    from s2robot.workflows.pipeline import PipelineConfig

    defaults = OmegaConf.structured(PipelineConfig)
    for path in sorted((CONFIGS / "recipe").glob("*.yaml")):
        raw = OmegaConf.to_container(OmegaConf.load(path))
        raw.pop("defaults", None)
        restated = [p for p, value in leaves(raw) if OmegaConf.select(defaults, p) == value]
        assert not restated, f"{path.name} restates the dataclass defaults of {restated}"


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_yaml_composes_to_dataclass_plus_its_differences(name: str) -> None:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        ran = compose(name)  # what `python scripts/<script>.py` runs
    expected, raw = expected_config(name)
    assert OmegaConf.to_container(ran) == OmegaConf.to_container(expected)
    defaults = OmegaConf.structured(ENTRY_POINTS[name])
    restated = [path for path, value in leaves(raw) if OmegaConf.select(defaults, path) == value]
    assert not restated, f"configs/{name}.yaml restates the dataclass defaults of {restated}"


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_presets_hold_only_what_differs(group: str) -> None:
    defaults = OmegaConf.structured(GROUP_SCHEMAS[group])
    for name, preset in GROUPS[group].items():
        restated = [k for k, v in preset.items() if defaults[k] == v]
        assert not restated, f"{group} preset {name!r} restates defaults {restated}"
        OmegaConf.to_object(OmegaConf.merge(defaults, preset))  # validates


def test_hydra_block_lives_in_one_file() -> None:
    with_block = [p.name for p in CONFIGS.glob("*.yaml") if "hydra" in OmegaConf.load(p)]
    assert with_block == [], f"these yaml files restate the hydra block of configs/hydra/s2robot.yaml: {with_block}"


def test_mujoco_gl_is_set_in_one_place() -> None:
    files = [p for d in ("s2robot", "scripts", "benchmarks", "envs", "tests") for p in (ROOT / d).rglob("*.py")]
    patterns = ('environ["MUJOCO_GL"]', 'setdefault("MUJOCO_GL"', "MUJOCO_GL ?=", '"MUJOCO_GL": ')
    setters = sorted(str(p.relative_to(ROOT)) for p in [*files, ROOT / "Makefile"]
                     if p != Path(__file__) and any(pat in p.read_text() for pat in patterns))
    assert setters == ["envs/cube_pick.py"]


NAN = float("nan")


@pytest.mark.parametrize("make,match", [
    (lambda: TrainConfig(lr=NAN), "lr must be finite and > 0, got nan"),
    (lambda: TrainConfig(lr=-1e-3), "lr must be finite"),
    (lambda: TrainConfig(weight_decay=-0.1), "weight_decay must be finite and ≥ 0"),
    (lambda: TrainConfig(grad_clip=float("inf")), "grad_clip must be finite"),
    (lambda: TrainConfig(val_fraction=1.0), r"val_fraction must be finite and in \[0, 1\)"),
    (lambda: TrainConfig(steps=0), "steps must be ≥ 1, got 0"),
    (lambda: TrainConfig(cache_batch_size=0), "cache_batch_size must be ≥ 1, got 0"),
    (lambda: TrainConfig(seed=-1), "seed must be an integer ≥ 0"),
    (lambda: EnvConfig(joint_noise=NAN), "joint_noise must be a finite value ≥ 0"),
    (lambda: EnvConfig(joint_noise=-0.1), "joint_noise must be a finite value ≥ 0"),
    (lambda: FeatureCacheConfig(batch_size=0), "batch_size must be ≥ 1"),
    (lambda: RecordConfig(n_episodes=-3), "n_episodes must be ≥ 1"),
    (lambda: RecordConfig(workers=-2), "workers must be ≥ 1"),
    # sizes: each names the field, the value and the valid range
    (lambda: PolicyConfig(d_model=0), "d_model must be ≥ 1 .*got 0"),
    (lambda: PolicyConfig(n_heads=0), "n_heads must be ≥ 1 .*got 0"),
    (lambda: PolicyConfig(d_model=30, n_heads=4), "d_model 30 must be a multiple of n_heads 4"),
    (lambda: PolicyConfig(n_layers=0), "n_layers must be ≥ 1 .*got 0"),
    (lambda: PolicyConfig(ff_mult=0), "ff_mult must be ≥ 1 .*got 0"),
    (lambda: PolicyConfig(t_obs=0), r"t_obs and t_act must be ≥ 1 \[steps\], got 0, 16"),
    (lambda: PolicyConfig(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
    (lambda: PolicyConfig(ensemble_decay=NAN), "ensemble_decay must be finite.*got nan"),
    (lambda: EnvConfig(image_size=100000), r"image_size must be an integer in \[8, 4096\] px .*got 100000"),
    (lambda: EnvConfig(image_size=4), r"image_size must be an integer in \[8, 4096\] px .*got 4"),
    (lambda: EnvConfig(max_steps=0), r"max_steps must be ≥ 1 \[control steps\], got 0"),
    (lambda: GeneratorConfig(image_size=100000), r"image_size must be an integer in \[8, 4096\] px .*got 100000"),
    (lambda: EncoderConfig(variant="vitti", img_sizes=[224 * 500]),
     r"each S² scale \(img_sizes\) must be an integer in \[1, 4096\] px .*got 112000"),
    (lambda: EncoderConfig(variant="vitti", img_sizes=[0]), r"each S² scale \(img_sizes\) .*got 0"),
    (lambda: EncoderConfig(variant="vitti", scales=[0.0]), r"scales must be finite and > 0 .*got \[0.0\]"),
    (lambda: EncoderConfig(variant="vitti", scales=[40.0]), r"each S² scale \(scales × vitti's 224 px\) .*got 8960"),
    (lambda: EncoderConfig(variant="vitti", max_split_size=-224), r"max_split_size must be an integer in \[1, 4096\]"),
    # seeds: numpy's SeedSequence refuses negatives, so a negative seed would fail only mid-run
    (lambda: EvalConfig(seed=-5), r"seed must be an integer ≥ 0 \(numpy's SeedSequence refuses negative seeds\), "
                                  r"got -5"),
    (lambda: RobustnessConfig(seed=-5), "seed must be an integer ≥ 0 .*got -5"),
    (lambda: RecordConfig(seed=-1), "seed must be an integer ≥ 0 .*got -1"),
    (lambda: PipelineConfig(record=RecordConfig(seed=-1)), "seed must be an integer ≥ 0 .*got -1"),
    (lambda: PipelineConfig(record=RecordConfig(out="demos/x.zarr", overwrite=True)),
     r"record.out, record.overwrite: the pipeline records train.demos in train.env and resumes it"),
    (lambda: GeneratorConfig(seed=-1), "seed must be an integer ≥ 0 .*got -1"),
    (lambda: EncoderConfig(seed=-1), "seed must be an integer ≥ 0 .*got -1"),
    (lambda: EncoderConfig(variant="oracle", oracle_noise=0.03, seed=-1), "seed must be an integer ≥ 0 .*got -1"),
    (lambda: PretrainConfig(seed=-1), "seed must be an integer ≥ 0 .*got -1"),
    (lambda: DistillConfig(seed=-1), "seed must be an integer ≥ 0 .*got -1"),
    (lambda: ProbeConfig(seed=-1), "seed must be an integer ≥ 0 .*got -1"),
    (lambda: CompareConfig(seeds=[0, -1]), r"each of seeds \(training seeds\) must be an integer ≥ 0 .*got -1"),
])
def test_bad_values_are_refused_at_the_boundary(make: Any, match: str) -> None:
    """A bad value is refused where it enters, naming the field and the value."""
    with pytest.raises(ValueError, match=match):
        make()


def test_paper_setting_stays_the_papers() -> None:
    """`--config-name paper` is the S² paper's protocol whatever the improved recipe's defaults become."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("paper"))
    t, p = cfg.train, cfg.train.policy
    assert (cfg.record.n_episodes, cfg.record.noise_std, cfg.record.tail_steps, t.env.joint_noise) == (120, 0.0, 0, 0.0)
    assert (p.t_obs, p.t_act, p.execute_steps, p.action_space, p.prev_action_tokens) == (16, 16, 8, "delta", True)
    assert (t.encoder.variant, t.encoder.img_sizes, t.encoder.readout) == ("vitb-mae-egosoup", [224, 448], "cls")


def test_rehearsal_is_make_runs_pipeline_on_the_arm_with_held_out_positions() -> None:
    """`make rehearse` runs `--config-name rehearse`: demos recorded through franky in franky-sim, the paper's 16
    positions × 3 plus ≥ 32 held-out ones, inference in the background."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("rehearse"))
    env, e = cfg.train.env, cfg.eval
    assert env.id == "s2robot/FrankaReal-v0" and env.options["host"] == "franky-sim"
    assert cfg.train.demos != PipelineConfig().train.demos  # its own demos: never mixed with make run's
    positions = e.position_set()[1]
    assert (e.positions, positions["fixed"], e.repeats) == ("paper", 16, 3)
    assert positions["n_random"] >= 32 and e.prefetch >= 1 and e.threads == "auto"
    makefile = (ROOT / "Makefile").read_text()
    assert "rehearse: setup\n\t$(PY) scripts/run_pipeline.py --config-name rehearse $(ARGS)" in makefile
