"""Recording demos into an EpisodeStore with parallel worker processes (``sim.pool``) and one writer.

Any policy records: a ``PolicyFactory`` builds, inside each worker, a callable ``policy(obs, info)`` that
returns the action (8,) — or an object with ``.label`` (the action to record) and ``.executed`` (the
action to step with), as the scripted expert's noise injection does. A teleop or another controller plugs
in the same way. Episode ``k`` uses seed ``seed + k``; results are written in seed order, so the store is
the same for any number of workers.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from s2robot.common.checks import check_seed
from s2robot.common.lock import writer_lock
from s2robot.common.timing import combine_timing, format_timing
from s2robot.data.keys import ACTION_SPACES
from s2robot.data.store import EpisodeStore
from s2robot.sim.env import ARM_ENV_ID, EnvConfig, check_variation
from s2robot.sim.episode import PolicyFactory, RecordJob, expert_policy
from s2robot.sim.pool import seed_ordered

CONTROLLERS = ("expert", "keyboard", "spacemouse", "scripted_operator")


def controller_factory(name: str, noise_std: float, expert_pace: float = 1.0) -> PolicyFactory:
    """The ``PolicyFactory`` of a ``RecordConfig.controller``."""
    if name == "expert":
        return expert_policy(noise_std, expert_pace)
    if name == "scripted_operator":
        from s2robot.real.operator import scripted_operator_policy

        return scripted_operator_policy()
    from s2robot.real.teleop import SpaceMouseSource, TerminalKeys, teleop_policy

    return teleop_policy(TerminalKeys if name == "keyboard" else SpaceMouseSource)


@dataclass
class RecordConfig:
    """``scripts/record_demos.py``. Hydra: ``configs/record.yaml`` (+ group ``env/``).

    out: demo store path
    n_episodes: episodes to keep
    workers: recording processes (rendering is CPU-bound); 1 = in this process
    seed: seed of the first episode; episode k uses seed + k
    keep_failures: keep failed episodes too (by default only successes are stored; every tried seed is
        listed in the store's attrs either way)
    resume: append to an existing store until it holds n_episodes
    overwrite: replace an existing store (otherwise refuse)
    noise_std: expert noise injection on executed joint deltas [rad] (DART: labels stay clean; both are stored)
    tail_steps: steps recorded after the first success, the expert lifting on and holding (0: stop at success, as
        the paper's demos did; the tail is what trains the chunk a policy executes past that step: README, "The recipe")
    max_attempts: give up after this many episodes without reaching n_episodes (None: 3 × n_episodes + 10)
    controller: who acts: ``expert`` (the scripted expert: the simulated env, or the arm in franky-sim), ``keyboard``
        or ``spacemouse`` (Cartesian teleoperation of the arm, ``s2robot.real.teleop``: one process, an operator),
        or ``scripted_operator`` (rehearsal only: a script presses the keyboard's keys through the same teleop,
        ``s2robot.real.operator``)
    expert_pace: the simulated env's scripted expert moves at this × its speeds (below 1: more control steps a pick
        along the same path; 0.6: ~40 to the lift instead of ~28, an FR3 pick through franky ~53); 1 on the arm
    variation: scene variation drawn per episode (``envs.variation``): ``none`` (the scene as built, the paper's),
        ``standard`` (the randomisation preset for robust policies), or factors at levels such as
        ``light_intensity:high``; each episode's drawn parameters go in its info
    """

    env: EnvConfig = field(default_factory=EnvConfig)
    out: str = "demos/cube_pick.zarr"
    n_episodes: int = 120
    workers: int = 2
    seed: int = 0
    keep_failures: bool = False
    resume: bool = False
    overwrite: bool = False
    noise_std: float = 0.0
    tail_steps: int = 10
    max_attempts: int | None = None
    controller: str = "expert"
    variation: str = "none"
    expert_pace: float = 1.0

    def __post_init__(self) -> None:
        check_variation(self.variation, self.env.id)
        if self.expert_pace != 1.0 and (self.controller != "expert" or self.env.id == ARM_ENV_ID):
            raise ValueError(f"expert_pace={self.expert_pace} paces the simulated env's scripted expert "
                             f"(controller=expert), not {self.controller} on {self.env.id}: leave expert_pace=1")
        if not (0 < self.expert_pace <= 2 and math.isfinite(self.expert_pace)):
            raise ValueError(f"expert_pace must be in (0, 2] (a factor on the expert's speeds), got {self.expert_pace}")
        if self.controller not in CONTROLLERS:
            raise ValueError(f"controller must be one of {CONTROLLERS}, got {self.controller!r}")
        if self.controller != "expert" and self.env.id != ARM_ENV_ID:
            raise ValueError(f"controller={self.controller} teleoperates the Franka arm: use env=franka (or "
                             f"env=franka_sim to rehearse), not {self.env.id}")
        if self.controller == "scripted_operator" and self.env.one_robot:
            raise ValueError(f"controller=scripted_operator reads the cube's true pose, which only the franky-sim "
                             f"rehearsal has (env=franka_sim), not the robot at {self.env.options.get('host')}: on a "
                             "real arm a person teleoperates, controller=keyboard or controller=spacemouse")
        if self.n_episodes < 1:
            raise ValueError(f"n_episodes must be ≥ 1 (episodes to keep), got {self.n_episodes}")
        if self.workers < 1:
            raise ValueError(f"workers must be ≥ 1 (1 = record in this process), got {self.workers}")
        check_seed(self.seed)  # episode k resets its env with seed + k
        if self.noise_std < 0 or not math.isfinite(self.noise_std):
            raise ValueError(f"noise_std must be a finite value ≥ 0 [rad], got {self.noise_std}")
        if self.tail_steps < 0:
            raise ValueError(f"tail_steps must be ≥ 0 (steps recorded after the first success), got {self.tail_steps}")
        if self.max_attempts is not None and self.max_attempts < self.n_episodes:
            raise ValueError(f"max_attempts ({self.max_attempts}) must be ≥ n_episodes ({self.n_episodes}) or null")
        if self.env.action_mode != "delta":
            raise ValueError(f"env.action_mode={self.env.action_mode!r}: the scripted expert steps the env with joint "
                             "deltas, and demos store both spaces anyway (policy.action_space picks one for "
                             "training); leave env.action_mode=delta for recording")
        if self.resume and self.overwrite:
            raise ValueError("resume=true and overwrite=true contradict each other: pick one")


def _open_store(cfg: RecordConfig, policy: str = "scripted expert") -> tuple[EpisodeStore, int]:
    """The store to append to and the next seed to try; ``policy`` names what records (kept in the attrs)."""
    attrs = {"env": asdict(cfg.env), "cameras": list(cfg.env.cameras), "image_size": cfg.env.image_size,
             "control_hz": 10, "recorder": {"policy": policy, "noise_std": cfg.noise_std,
                                            "tail_steps": cfg.tail_steps, "keep_failures": cfg.keep_failures,
                                            "first_seed": cfg.seed, "variation": cfg.variation,
                                            "expert_pace": cfg.expert_pace},
             "attempts": []}
    path = Path(cfg.out)
    if not path.exists() or cfg.overwrite:
        path.parent.mkdir(parents=True, exist_ok=True)
        return EpisodeStore.create(path, attrs=attrs, overwrite=cfg.overwrite), cfg.seed
    if not cfg.resume:
        raise FileExistsError(f"{path} already exists: pass resume=true to append to it until it holds "
                              f"{cfg.n_episodes} episodes, overwrite=true to replace it, or another out=")
    store = EpisodeStore.open(path, mode="a")
    if store.n_episodes and ACTION_SPACES["absolute"][0] not in store.keys:
        raise ValueError(f"cannot resume {path}: it was recorded before s2robot stored absolute targets, executed "
                         f"actions and the cube position (its keys: {list(store.keys)}), so new episodes would not fit "
                         "it. Record into another out= (or overwrite=true to replace it)")
    changed = _changed_settings(store.attrs, attrs)
    if changed:
        raise ValueError(f"cannot resume {path}: this run changes {'; '.join(changed)}. A store holds one setting; "
                         "resume with the recorded values, or record into another out=")
    # Every stored episode's seed is in `attempts` (committed with it); the infos also cover older stores.
    tried = [a["seed"] for a in store.attrs.get("attempts", [])]
    tried += [store.episode_info(i)["seed"] for i in range(store.n_episodes) if "seed" in store.episode_info(i)]
    return store, (max(tried) + 1 if tried else cfg.seed)


def _changed_settings(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """What a resume would change about how the store's episodes are made."""
    env = {**asdict(EnvConfig()), **recorded.get("env", {})}  # fields added since: their defaults
    changed = [f"env.{k} ({env.get(k)} → {v})" for k, v in wanted["env"].items() if env.get(k) != v]
    changed += [f"{k} ({recorded.get(k)} → {wanted[k]})" for k in ("cameras", "image_size")
                if recorded.get(k) != wanted[k]]
    old = {**_RECORDER_BEFORE, **recorded.get("recorder", {})}
    new = wanted["recorder"]
    keys = ("policy", "noise_std", "tail_steps", "keep_failures", "first_seed", "variation", "expert_pace")
    changed += [f"recorder.{k} ({old.get(k)} → {new[k]})" for k in keys if k in old and old[k] != new[k]]
    return changed


# What a store recorded before a recorder setting existed was made with: no post-success tail, one scene, the
# expert at its own pace.
_RECORDER_BEFORE = {"tail_steps": 0, "variation": "none", "expert_pace": 1.0}


def record_demos(cfg: RecordConfig, factory: PolicyFactory | None = None, progress: bool = True) -> Path:
    """Record until the store at ``cfg.out`` holds ``cfg.n_episodes`` episodes; returns its path. The store is
    locked for this writer meanwhile (a second recorder of the same store is refused, naming this one)."""
    with writer_lock(cfg.out, "demo store"):
        return _record(cfg, factory, progress)


def _record(cfg: RecordConfig, factory: PolicyFactory | None, progress: bool) -> Path:
    factory = factory or controller_factory(cfg.controller, cfg.noise_std, cfg.expert_pace)
    policy = getattr(factory, "name", type(factory).__name__)  # what the store's attrs say recorded it
    store, next_seed = _open_store(cfg, policy)
    attempts = list(store.attrs.get("attempts", []))
    max_attempts = cfg.max_attempts or 3 * cfg.n_episodes + 10
    need = cfg.n_episodes - store.n_episodes
    bar = tqdm(total=cfg.n_episodes, initial=store.n_episodes, unit="ep", disable=not progress,
               desc=f"recording {Path(cfg.out).name}", file=sys.stdout)
    steps, t0, new_attempts = 0, time.perf_counter(), 0
    job = RecordJob(cfg.env, factory, cfg.tail_steps, cfg.variation)
    workers = 1 if cfg.env.one_robot or cfg.controller != "expert" else cfg.workers
    if workers != cfg.workers:
        print(f"recording on the robot at {cfg.env.options['host']}: one episode at a time, in this process")
    results = seed_ordered(job, next_seed, workers) if need > 0 else iter(())
    for _, (data, meta) in results:
        if store.n_episodes >= cfg.n_episodes:
            break
        new_attempts += 1
        attempts.append({k: meta[k] for k in ("seed", "success", "length")})
        if meta["success"] or cfg.keep_failures:  # the attempt is committed with its episode, atomically
            cell = meta.pop("cell", None)  # the arm's robot, host, cameras, limits: once, in the store's attrs
            extra = {"cell": cell} if cell is not None and "cell" not in store.attrs else {}
            store.add_episodes([(data, meta)], attrs={"attempts": attempts, **extra})
            bar.update(1)
        else:
            store.update_attrs({"attempts": attempts})
        steps += meta["length"]
        ok = sum(a["success"] for a in attempts)
        rate = steps / (time.perf_counter() - t0)
        bar.set_postfix(success=f"{ok}/{len(attempts)}", steps_per_s=f"{rate:.0f}")
        if store.n_episodes >= cfg.n_episodes:
            break
        if new_attempts >= max_attempts:
            raise RuntimeError(
                f"gave up after {new_attempts} episodes with {store.n_episodes}/{cfg.n_episodes} kept in "
                f"{cfg.out} (success {ok}/{len(attempts)}); the store keeps what was recorded: fix the "
                "policy and run again with resume=true"
            )
    bar.close()
    if hasattr(results, "close"):
        results.close()  # stops the workers
    infos = (store.episode_info(i) for i in range(store.n_episodes))
    timings = [info["timing"] for info in infos if "timing" in info]
    if timings:  # recorded on the arm: how its control loop kept time
        print(f"control loop over {len(timings)} episodes: {format_timing(combine_timing(timings))}")
    return Path(cfg.out)


