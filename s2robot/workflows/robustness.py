"""Robustness to the scene (``scripts/robustness.py``): one checkpoint evaluated in the scene as built and under
every condition of the perturbation suite, on the same episodes.

Each condition is a scene variation (``envs.variation``): every factor at each level, then every visual factor at
once. Every condition runs the same cube positions, arm start noise and seeds as the clean evaluation, so each is
compared with clean episode by episode (``workflows.paired``, cube positions resampled). Conditions are evaluated
one by one into ``<out>/conditions/<condition>/`` (an ordinary evaluation folder each) and reused when a re-run
finds them complete for the same checkpoint and episodes, so an interrupted suite continues where it stopped.
For the physical factors the scripted expert runs the same episodes too: it says whether the factor leaves the
task possible. Writes ``robustness.{md,json,png}`` and ``robustness_frames.png`` (one policy-camera frame per
condition, the same episode in each).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from s2robot.policy.checkpoint import read_parts, weights_path
from s2robot.sim.env import EnvConfig, check_variation, make_env
from s2robot.sim.episode import expert_policy, run_episode
from s2robot.sim.rollout import Episode, eval_episodes
from s2robot.vision.weights import file_sha256
from s2robot.workflows.evaluate import EvalConfig, evaluate
from s2robot.workflows.robustness_report import (
    condition_rows,
    format_robustness,
    plot_frame_grid,
    plot_robustness,
)


@dataclass
class RobustnessConfig(EvalConfig):
    """``scripts/robustness.py`` (``configs/robustness.yaml``): ``EvalConfig``'s fields (checkpoint, positions,
    repeats, seed, n_envs, ...) choose the episodes every condition runs, plus:

    levels: the levels each factor is evaluated at (``envs.variation.LEVELS``)
    groups: factor groups also evaluated all at once, at each level (``visual``: every visual factor together)
    conditions: an explicit list of variation specs instead of factors × levels and groups (``none`` is always run)
    expert: also run the scripted expert under each physical condition (is the task still possible?)
    out: output folder; default ``<run dir>/robustness``

    Defaults differ from ``EvalConfig``'s: 48 held-out positions once each, no videos.
    """

    positions: Any = "none"
    n_random_positions: int = 48
    repeats: int = 1
    videos: int = 0
    levels: list[str] = field(default_factory=lambda: ["low", "high"])
    groups: list[str] = field(default_factory=lambda: ["visual"])
    conditions: list[str] | None = None
    expert: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variation != "none":
            raise ValueError(f"variation={self.variation!r}: the suite sets each condition's variation itself; choose "
                             "them with levels=, groups= or conditions=[...]")
        for spec in self.suite():
            check_variation(spec)

    def suite(self) -> list[str]:
        """The conditions in order, ``none`` (clean) first."""
        from envs.variation import conditions

        specs = list(self.conditions) if self.conditions is not None else conditions(self.levels, self.groups)
        return ["none", *(s for s in dict.fromkeys(specs) if s != "none")]

    def eval_config(self, variation: str, out: Path) -> EvalConfig:
        """The plain evaluation of one condition."""
        base = {f.name: getattr(self, f.name) for f in fields(EvalConfig)}
        return EvalConfig(**{**base, "variation": variation, "out": str(out)})


def condition_dir(variation: str) -> str:
    """A condition's folder name: ``clean`` for none, else the spec with ``:`` as ``_`` and ``+`` as ``__``."""
    return "clean" if variation == "none" else variation.replace(":", "_").replace("+", "__")


def _identity(cfg: RobustnessConfig) -> dict[str, Any]:
    """What a stored condition must match to be reused: the checkpoint's weights and every episode setting."""
    keep = ("use_ema", "positions", "n_random_positions", "position_seed", "repeats", "held_out_repeats", "seed",
            "joint_noise", "max_steps", "prefetch")
    weights = weights_path(cfg.checkpoint, read_parts(cfg.checkpoint)["config"])
    # execution settings as flat keys (execution, execute_steps): the identity.json of suites on disk names them so
    return {"weights_sha256": file_sha256(weights),
            "eval": {**{k: getattr(cfg, k) for k in keep}, **asdict(cfg.executing)}}


def _stored(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The stored results of a condition when complete and made with ``identity``; else None."""
    file, ident = path / "results.json", path / "identity.json"
    if not (file.is_file() and ident.is_file()):
        return None
    try:
        if json.loads(ident.read_text()) != json.loads(json.dumps(identity)):
            return None
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None


def expert_success(env_cfg: EnvConfig, episodes: list[Episode], variation: str) -> list[bool]:
    """The scripted expert's success on ``episodes`` (same cubes, seeds and arm noise) under ``variation``, one at a
    time in this process, without rendering."""
    env = make_env(EnvConfig(**{**asdict(env_cfg), "cameras": [], "terminate_on_success": True,
                                "action_mode": "delta"}), render_mode=None)
    factory = expert_policy(0.0)
    out = []
    try:
        for e in episodes:
            options = {"cube_xy": e.cube_xy, **({"variation": variation} if variation != "none" else {})}
            _, meta = run_episode(env, e.seed, lambda obs, info, s=e.seed: factory(env, s), lambda *a: {}, options)
            out.append(bool(meta["success"]))
    finally:
        env.close()
    return out


def run_robustness(cfg: RobustnessConfig) -> dict[str, Any]:
    """Evaluate every condition (reusing complete ones), compare each with clean, write the report; returns it, with
    each condition's full evaluation (``results``: {condition: results.json})."""
    from envs.variation import FACTORS

    parts = read_parts(cfg.checkpoint)
    env_cfg = EnvConfig(**{**parts["env"]})
    if cfg.joint_noise is not None:
        env_cfg.joint_noise = cfg.joint_noise
    if cfg.max_steps is not None:
        env_cfg.max_steps = cfg.max_steps
    check_variation("none", env_cfg.id)
    if env_cfg.one_robot:
        raise ValueError("the robustness suite varies a simulated scene; this checkpoint drives a real arm")
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).resolve().parent.parent / "robustness"
    out.mkdir(parents=True, exist_ok=True)
    identity = _identity(cfg)
    suite = cfg.suite()
    results: dict[str, dict[str, Any]] = {}
    for k, spec in enumerate(suite):
        where = out / "conditions" / condition_dir(spec)
        stored = _stored(where, identity)
        if stored is None:
            print(f"[{k + 1}/{len(suite)}] {spec}")
            (where / "identity.json").unlink(missing_ok=True)  # complete only once results.json is written
            stored = evaluate(cfg.eval_config(spec, where))
            (where / "identity.json").write_text(json.dumps(identity, indent=2))
        else:
            print(f"[{k + 1}/{len(suite)}] {spec}: reusing {where}")
        results[spec] = stored
    clean = results["none"]
    expert: dict[str, float] = {}
    if cfg.expert:
        positions, desc = cfg.position_set()
        episodes = eval_episodes(positions, cfg.repeat_counts(desc), cfg.seed)
        physical = [s for s in suite if s == "none" or any(FACTORS[f].kind == "physical" for f in _factors(s))]
        for spec in physical:
            ok = expert_success(env_cfg, episodes, spec)
            expert[spec] = sum(ok) / len(ok)
    rows = condition_rows(results, clean, expert)
    report = {"checkpoint": str(Path(cfg.checkpoint).resolve()), "label": clean.get("label"),
              "checkpoint_step": clean.get("checkpoint_step"), "identity": identity, "config": asdict(cfg),
              "conditions": rows}
    (out / "robustness.json").write_text(json.dumps(report, indent=2))
    text = format_robustness(rows, clean.get("label", ""))
    (out / "robustness.md").write_text(text + "\n")
    label = str(clean.get("label", "")).split(", weights ")[0]  # the encoder, without the weights file's path
    plot_robustness(rows, out / "robustness.png", f"{Path(cfg.checkpoint).resolve().parent.parent.name}: {label}, "
                    f"{rows[0]['episodes']} episodes per condition")
    first = eval_episodes(*_first(cfg))[0]
    plot_frame_grid(env_cfg, first, suite, out / "robustness_frames.png")
    print(text)
    print(f"written: {out / 'robustness.md'}, robustness.json, robustness.png, robustness_frames.png")
    return {**report, "results": results}


def _factors(spec: str) -> list[str]:
    from envs.variation import parse

    return [d.factor for d in parse(spec)]


def _first(cfg: RobustnessConfig) -> tuple[list[tuple[float, float]], list[int], int]:
    positions, desc = cfg.position_set()
    return positions[:1], cfg.repeat_counts(desc)[:1], cfg.seed
