"""The evaluation workflow (``scripts/eval.py``): load a checkpoint without the trainer, roll it out at the
evaluation positions with live S² encoding, and write ``results.json``, a table, a success map and videos; the
success rate also goes onto the checkpoint's model card (``README.md``, one section per output folder).

Success is reported the way the paper does, by default over the 16 ``EVAL_POSITIONS`` (× ``repeats`` with
different arm-noise seeds), with a Wilson 95% interval; held-out sets (a file, a list, or positions drawn from
the held-out stream of ``envs.positions``) go through the same code and the same ``results.json`` schema. Each
episode records why it failed (``sim.rollout.classify_failure``) and how far its cube is from the nearest
training-demo cube.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from s2robot.common.checks import check_seed
from s2robot.common.distributed import distributed, on_main
from s2robot.common.runlog import WandbConfig, wandb_run
from s2robot.common.threads import AUTO, check_threads, set_threads, worker_threads
from s2robot.common.timing import combine_timing, format_timing, format_timing_table
from s2robot.data.store import EpisodeStore
from s2robot.policy.checkpoint import from_pretrained
from s2robot.policy.configuration import EXECUTION_FIELDS, PolicyExecution
from s2robot.policy.modeling import ChunkTransformerPolicy
from s2robot.policy.prefetch import PrefetchingPolicy
from s2robot.policy.remote import RemotePolicy
from s2robot.sim.env import EnvConfig, check_variation
from s2robot.sim.rollout import Episode, EpisodeResult, WaveDone, eval_episodes, run_episodes
from s2robot.vision.encoder import (
    EncoderConfig,
    EncoderPlacement,
    FrozenS2Encoder,
    build_encoder,
    encoder_fingerprint,
    weights_digest,
)
from s2robot.vision.oracle import OracleEncoder
from s2robot.workflows.checkpoint import command_line, record_on_card
from s2robot.workflows.eval_shards import eval_key, remove_parts, run_shared
from s2robot.workflows.positions import position_set
from s2robot.workflows.report import (
    format_table,
    nearest_distances,
    plot_success_map,
    set_summaries,
    summarize,
    write_episode_videos,
)

Evaluator = Callable[[ChunkTransformerPolicy, int], Mapping[str, float]]  # a train(cfg, evaluator=...) hook


@dataclass
class EvalConfig:
    """``scripts/eval.py`` (``configs/eval.yaml``).

    checkpoint: a ``train_bc.py`` checkpoint folder; its parts rebuild the encoder and the env
    positions: the fixed set of cube positions: ``paper`` (the 16 EVAL_POSITIONS, the paper's headline), a
        ``.json`` file (a list of [x, y], ``{"positions": [...]}``, or another evaluation's ``results.json``), a
        ``.csv`` file (one ``x,y`` per line, optional header), an inline list ``[[x, y], ...]`` [m], or ``none``
    n_random_positions / position_seed: add this many held-out positions, drawn uniformly over the workspace from
        the held-out stream of ``envs.positions`` (never within 1 mm of a demo cube), after the fixed set;
        ``positions=none n_random_positions=32`` evaluates on random positions only
    repeats: episodes per position, each with its own seed and so its own arm start noise
    joint_noise: arm start noise at reset [rad], the same for every checkpoint evaluated (demos start from home
        exactly; without noise the repeats of a position would be the same episode); None keeps the training
        env's value (then repeats > 1 needs that value > 0)
    held_out_repeats: repeats of each held-out (random) position; None: ``repeats``
    seed: seed of the first episode; episode i (position-major, then repeat) uses seed + i
    max_steps: episode limit [steps]; None keeps the training env's value
    n_envs: parallel env worker processes (0 = sequential, in this process)
    videos: how many episodes to film (-1 all, 0 none), in episode order
    prefetch: background inference (``policy.prefetch``): encode each step's frames and predict the next chunk in a
        thread once this many queued actions are left, dropping the ones that went stale meanwhile (0: off, encode
        every step and predict when the queue runs out; for a real arm whose 10 Hz deadline that would miss)
    threads: torch's CPU threads in this process (``common.threads``): ``auto`` = torch's own (a thread per core, or
        ``OMP_NUM_THREADS``), leaving a core to the robot's side when the env is the arm (franky-sim's physics thread,
        or franky's control loop); or a number. Env worker processes run 1 each
    server: run the encoder and policy on a policy server (``scripts/serve_policy.py`` on a GPU machine, serving the
        same checkpoint) at this address, ``tcp://<host>:<port>``; this process runs the envs and sends each step's
        frames and proprio (``policy.remote``); the same actions as in process. None: in this process
    server_timeout: the longest wait for the server's reply to the connection check or to any step [s]; past it the
        evaluation stops (a running episode's envs close, which stops an arm; finished episodes are kept)
    executing: run the checkpoint's chunks another way than it was trained with (``PolicyExecution``:
        ``executing.execution``, ``executing.execute_steps``; None fields keep the checkpoint's): compares execution
        on the same weights
    placement: where, in what precision and in what batches the encoder runs (``EncoderPlacement``; None fields
        keep the checkpoint's encoder config; the features' meaning, and so the fingerprint, stay the same)
    variation: the scene every episode runs in (``envs.variation``, drawn from the episode's seed): ``none`` (as
        built), a factor at a level (``light_intensity:high``), ``visual:high`` (every visual factor at once), ...;
        the same seeds give the same cubes and arm noise under every variation, so evaluations pair
    out: output folder; default ``<run dir>/eval`` (``<run dir>/eval-<variation>`` for a varied scene)
    """

    checkpoint: str = "runs/cube_pick/checkpoints/last"
    use_ema: bool = True
    positions: Any = "paper"
    n_random_positions: int = 0
    position_seed: int = 0
    repeats: int = 3
    held_out_repeats: int | None = None
    seed: int = 1000
    joint_noise: float | None = 0.02
    max_steps: int | None = None
    n_envs: int = 16
    videos: int = 4
    prefetch: int = 0
    threads: str = AUTO
    server: str | None = None
    server_timeout: float = 5.0
    executing: PolicyExecution = field(default_factory=PolicyExecution)
    placement: EncoderPlacement = field(default_factory=EncoderPlacement)
    variation: str = "none"
    device: str = "auto"
    out: str | None = None
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats must be ≥ 1 (episodes per position), got {self.repeats}")
        if self.held_out_repeats is not None and self.held_out_repeats < 1:
            raise ValueError(f"held_out_repeats must be ≥ 1 or null (= repeats), got {self.held_out_repeats}")
        if self.n_envs < 0:
            raise ValueError(f"n_envs must be ≥ 0 (0 = sequential, in this process), got {self.n_envs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be ≥ 1 or null (the training env's), got {self.max_steps}")
        if self.joint_noise is not None and not (math.isfinite(self.joint_noise) and self.joint_noise >= 0):
            raise ValueError(f"joint_noise must be a finite value ≥ 0 [rad] or null (the training env's), got "
                             f"{self.joint_noise}")
        if self.prefetch < 0:
            raise ValueError(f"prefetch must be ≥ 0 (0: off), got {self.prefetch}")
        self.threads = check_threads(self.threads)
        if self.server is not None and not (self.server.startswith(("tcp://", "ipc://")) and "*" not in self.server):
            raise ValueError(f"server must be the policy server's address, tcp://<host>:<port> (the machine it runs "
                             f"on, not *), or null (in process), got {self.server!r}")
        if not (math.isfinite(self.server_timeout) and self.server_timeout > 0):
            raise ValueError(f"server_timeout must be a finite time > 0 [s], got {self.server_timeout}")
        check_variation(self.variation)
        if self.videos < -1:
            raise ValueError(f"videos must be ≥ -1 (-1 all, 0 none, else how many), got {self.videos}")
        if self.n_random_positions < 0 or self.position_seed < 0:
            raise ValueError(f"n_random_positions and position_seed must be ≥ 0, got {self.n_random_positions}, "
                             f"{self.position_seed}")
        check_seed(self.seed)  # episode i resets its env with seed + i
        if isinstance(self.positions, tuple | np.ndarray):  # plain lists, as hydra gives and results.json records
            self.positions = np.asarray(self.positions, dtype=object).tolist()
        if self.positions != "paper" or self.n_random_positions:
            self.position_set()  # refuse a bad file or list now, not after loading the checkpoint (or training)

    def position_set(self) -> tuple[list[tuple[float, float]], dict[str, Any]]:
        """The cube positions in evaluation order and their description (``workflows.positions``)."""
        return position_set(self.positions, self.n_random_positions, self.position_seed)

    def repeat_counts(self, positions: dict[str, Any]) -> list[int]:
        """Repeats of every position of ``position_set``: ``repeats`` for the fixed set, ``held_out_repeats`` after."""
        held = self.repeats if self.held_out_repeats is None else self.held_out_repeats
        return [self.repeats] * positions["fixed"] + [held] * positions["n_random"]


def _structured(cls: type, d: Mapping[str, Any]) -> Any:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), dict(d)))


def encoder_for_checkpoint(encoder_part: Mapping[str, Any], placement: EncoderPlacement | None = None
                           ) -> FrozenS2Encoder | OracleEncoder:
    """The frozen encoder a checkpoint was trained on, placed as ``placement`` says; refuses one whose features would
    mean something else."""
    enc_cfg: EncoderConfig = (placement or EncoderPlacement()).apply(_structured(EncoderConfig, encoder_part["config"]))
    digest = weights_digest(enc_cfg)
    found, trained = encoder_fingerprint(enc_cfg, digest), encoder_part["fingerprint"]
    if found != trained:
        raise ValueError(
            f"the checkpoint was trained on features of encoder {trained}, but its config "
            f"now builds encoder {found} ({enc_cfg.variant}, weights {enc_cfg.weights!r} → digest {digest[:12]}): "
            "the weights file changed or is a different one. Put the original weights back, or retrain "
            "(scripts/train_bc.py) with the current encoder")
    return build_encoder(enc_cfg)


def _label(desc: Mapping[str, Any]) -> str:
    if desc.get("privileged"):
        return f"ORACLE: PRIVILEGED {desc['readout']} (not vision)"
    weights = "RANDOM weights (not pretrained)" if desc["weights_random"] else f"weights {desc['weights']}"
    return f"{desc['variant']} {desc['img_sizes']} {desc['readout']}, {weights}"


def _execute(policy: ChunkTransformerPolicy, executing: PolicyExecution) -> dict[str, Any]:
    """Run ``policy``'s chunks as ``executing`` says; returns what runs and what the checkpoint was trained with, as
    results.json keeps them."""
    trained = {k: getattr(policy.cfg, k) for k in EXECUTION_FIELDS}
    policy.cfg = executing.apply(policy.cfg)
    ran = {k: getattr(policy.cfg, k) for k in EXECUTION_FIELDS}
    if ran != trained:
        print(f"execution for this evaluation: {executing.given()} (the checkpoint's: {trained})")
    return {**ran, "checkpoint": trained}


def _eval_env(cfg: EvalConfig, env_part: Mapping[str, Any], policy: ChunkTransformerPolicy) -> EnvConfig:
    """The checkpoint's env (``env_part``) as this evaluation runs it: the policy's action space, ``cfg``'s arm noise
    and episode limit; refuses repeats that could not differ and a variation the env does not have."""
    env_cfg: EnvConfig = _structured(EnvConfig, env_part)
    env_cfg.action_mode = policy.action_space  # the demos record both; the env runs the policy's
    if cfg.joint_noise is not None:
        env_cfg.joint_noise = cfg.joint_noise
    if cfg.max_steps is not None:
        env_cfg.max_steps = cfg.max_steps
    if max(cfg.repeats, cfg.held_out_repeats or 1) > 1 and env_cfg.joint_noise == 0:
        raise ValueError(f"repeats={cfg.repeats} with joint_noise=0 runs each position's one episode {cfg.repeats} "
                         "times (nothing else is random): set joint_noise > 0 [rad] (default 0.02) or repeats=1")
    check_variation(cfg.variation, env_cfg.id)
    return env_cfg


def _runner(policy: ChunkTransformerPolicy, encoder: Any, cfg: EvalConfig) -> tuple[Any, Any]:
    """The policy and the encoder the rollout runs: ``policy`` and ``encoder``; when ``cfg.prefetch`` > 0, both in the
    background (``policy.prefetch``: the rollout's encoder passes the frames on; the oracle's privileged state is not
    a frame and is read in the loop); with ``cfg.server``, a client of that policy server (which then runs both, the
    same way) and the stand-in encoder that passes the frames on (``policy.remote``). A chunk too short to prefetch
    under the executed steps is refused with the ``execute_steps`` that would fit."""
    prefetch = cfg.prefetch
    background = encoder if cfg.server is None and not isinstance(encoder, OracleEncoder) else None
    try:  # refuses what the server would refuse
        local = PrefetchingPolicy(policy, prefetch, encoder=background) if prefetch else policy
    except ValueError as err:
        fits = policy.cfg.t_act - prefetch - 1  # the most actions per chunk that leave room to prefetch
        if policy.cfg.execution != "receding" or policy.cfg.execute_steps <= fits or prefetch >= fits:
            raise
        raise ValueError(f"{err}: this evaluation runs {policy.cfg.execute_steps} of each {policy.cfg.t_act}-step "
                         f"chunk; for background inference pass executing.execute_steps ≤ {fits} (eval.executing."
                         "execute_steps in make run; the same weights), or prefetch=0") from None
    if cfg.server is None:
        return local, local.relay if prefetch and background is not None else encoder
    remote = RemotePolicy(cfg.server, policy, encoder.fingerprint, prefetch, cfg.server_timeout)
    print(f"policy server at {cfg.server}: {remote.served['checkpoint']} (step {remote.served['step']})")
    return remote, remote.relay


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Load, roll out, write ``results.json``, table, success map and videos; returns the results dict.

    Under torchrun every rank loads the checkpoint and runs a share of the episodes' waves (``eval_shards``), rank 0
    merges them and writes the outputs, and every rank returns the results dict. A run that stopped is resumed by
    the same command: only the waves that no process finished are run.
    """
    with distributed(cfg.device) as (dist, device):
        policy, parts = from_pretrained(cfg.checkpoint, device, use_ema=cfg.use_ema)
        if problem := parts["config"].get("sim_env_problem"):
            raise ValueError(f"{cfg.checkpoint} cannot be evaluated in simulation: {problem}")
        execution = _execute(policy, cfg.executing)
        encoder = encoder_for_checkpoint(parts["encoder"], cfg.placement)
        env_cfg = _eval_env(cfg, parts["env"], policy)
        set_threads(cfg.threads, env_cfg.robot_side)
        positions, positions_desc = cfg.position_set()
        episodes = eval_episodes(positions, cfg.repeat_counts(positions_desc), cfg.seed)
        out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).resolve().parent.parent / eval_dir_name(cfg.variation)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        n_envs = 0 if env_cfg.one_robot else cfg.n_envs
        if env_cfg.one_robot and dist.world > 1:
            raise ValueError(f"the robot at {env_cfg.options['host']} runs one episode at a time: evaluate it in one "
                             f"process (python scripts/eval.py ...), not under torchrun ({dist.world} processes)")
        if n_envs != cfg.n_envs:
            print(f"evaluating on the robot at {env_cfg.options['host']}: one episode at a time, in this process")
        runner, encoder = _runner(policy, encoder, cfg)
        if cfg.variation != "none" and dist.is_main:
            print(f"scene variation: {cfg.variation} (drawn per episode from its seed)")

        def run_waves(waves: list[int], on_wave: WaveDone) -> None:
            with worker_threads():  # env workers share the cores with this process: 1 thread each
                run_episodes(runner, encoder, env_cfg, episodes, n_envs, cfg.videos, cfg.progress and dist.is_main,
                             cfg.variation, waves=waves, on_wave=on_wave)

        key = eval_key(cfg.checkpoint, _result_settings(cfg))
        try:
            merged = run_shared(out, key, dist, episodes, n_envs, run_waves,
                                lambda frames, results: write_episode_videos(frames, results, out / "videos"))
        finally:  # a background worker ends with the rollouts, a server's client disconnects (stats stay readable)
            getattr(runner, "close", lambda: None)()

        def report() -> dict[str, Any]:
            results, videos, ran = merged
            return _write_outputs(cfg, parts, encoder, runner, env_cfg, positions_desc, episodes, execution, out,
                                  results, videos, {"time_s": time.perf_counter() - t0, "episodes_run": ran})

        return on_main(dist, report)


def _result_settings(cfg: EvalConfig) -> dict[str, Any]:
    """The evaluation's settings that its results depend on (``eval_shards.eval_key``): all but where the outputs
    go, how many episodes are filmed, the progress bar, logging, torch's threads and where the policy runs (a policy
    server gives the in-process actions, so a run stopped by a server resumes through another one, or in process)."""
    return {k: v for k, v in asdict(cfg).items()
            if k not in ("out", "videos", "progress", "wandb", "server", "server_timeout", "threads")}


def _write_outputs(cfg: EvalConfig, parts: Mapping[str, Any], encoder: Any, runner: Any, env_cfg: EnvConfig,
                   positions_desc: dict[str, Any], episodes: list[Episode], execution: dict[str, Any], out: Path,
                   results: list[EpisodeResult], videos: list[Path], run: dict[str, Any]) -> dict[str, Any]:
    """results.json (then the parts go), table.md, the success map and the model card's line; returns the report."""
    demo_cubes, demo_desc = training_cubes(parts)
    if demo_cubes is not None:
        for r, d in zip(results, nearest_distances([r.cube_xy for r in results], demo_cubes), strict=True):
            r.nearest_demo = d
    summary, desc, step = summarize(results), encoder.describe(), parts["config"]["step"]
    summary["sets"] = set_summaries(results, positions_desc)
    report = {**summary, "label": _label(desc), "checkpoint": str(Path(cfg.checkpoint).resolve()),
              "checkpoint_step": step, "encoder": desc, "weights_random": desc["weights_random"],
              "env": asdict(env_cfg), "eval": asdict(cfg), "variation": cfg.variation, "positions": positions_desc,
              "demo_cubes": demo_desc, "execution": execution, "seeds": [e.seed for e in episodes], **run,
              "episodes_detail": [asdict(r) for r in results]}
    if cfg.prefetch:
        report["prefetch"] = dict(runner.stats)
        print(f"background inference: {runner.stats}")
    if any(r.timing for r in results):  # the arm's control loop (s2robot.common.timing), over all episodes
        report["timing"] = combine_timing([r.timing for r in results if r.timing])
        print(f"control loop over {len(results)} episodes: {format_timing(report['timing'])}")
    (out / "results.json").write_text(json.dumps(report, indent=2))
    remove_parts(out)
    timing = f"\n\n{format_timing_table(report['timing'])}" if "timing" in report else ""
    (out / "table.md").write_text(format_table(results, summary, report["label"]) + timing + "\n")
    name = parts["config"].get("run", {}).get("name", Path(cfg.checkpoint).resolve().parent.parent.name)
    plot_success_map(results, out / "success_map.png", f"{name} @ step {step}\n{report['label']}")
    report["outputs"] = {"dir": str(out), "videos": [str(v) for v in videos]}
    print(record_on_card(cfg.checkpoint, parts, report, command_line("scripts/eval.py", cfg)))
    _log_wandb(cfg, name, report, out, videos)
    return report


def eval_dir_name(variation: str) -> str:
    """The default evaluation folder's name in a run: ``eval`` for the scene as built, else ``eval-<variation>``."""
    if variation == "none":
        return "eval"
    return "eval-" + variation.replace(":", "_").replace("+", "__")


def training_cubes(parts: Mapping[str, Any]) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The training demos' cube positions (M, 2) [m] of a checkpoint, and where they came from: the list its
    ``config.json`` records (``demo_cubes``: the training split), else every demo of the store it was trained on
    (train and validation) when that store is still there; (None, ...) when neither is."""
    recorded = parts["config"].get("demo_cubes")
    if recorded:
        return np.asarray(recorded, float).reshape(-1, 2), {"source": "checkpoint", "count": len(recorded)}
    demos = parts["config"].get("run", {}).get("demos")
    if demos and Path(demos).is_dir():
        try:
            store = EpisodeStore.open(demos)
            xy = [store.episode_info(i).get("cube_xy") for i in range(store.n_episodes)]
        except (OSError, ValueError, KeyError):
            xy = []
        if xy and all(p is not None for p in xy):
            return np.asarray(xy, float).reshape(-1, 2), {"source": f"store {demos} (all episodes)", "count": len(xy)}
    return None, {"source": None, "count": 0}


def _log_wandb(cfg: EvalConfig, name: str, report: dict[str, Any], out: Path, videos: list[Path]) -> None:
    run = wandb_run(cfg.wandb, f"{name}-eval", out, {"eval": report["eval"], "encoder": report["encoder"]},
                    job_type="eval")
    if run is None:
        return
    import wandb

    run.log({"eval/success_rate": report["success_rate"], "eval/ci95_low": report["ci95"][0],
             "eval/ci95_high": report["ci95"][1], "eval/success_map": wandb.Image(str(out / "success_map.png")),
             **{f"eval/video/{v.stem}": wandb.Video(str(v), format="mp4") for v in videos}})
    run.finish()


def periodic_evaluator(encoder_cfg: EncoderConfig, env: EnvConfig, n_envs: int = 16, max_steps: int | None = None
                       ) -> Evaluator:
    """A ``train(cfg, evaluator=...)`` hook: success rate at the 16 paper positions (one episode each, the training
    env's arm noise) every ``eval_every`` steps."""
    from envs import EVAL_POSITIONS

    encoder = build_encoder(encoder_cfg)
    env_cfg = EnvConfig(**asdict(env))
    if max_steps is not None:
        env_cfg.max_steps = max_steps
    episodes = eval_episodes(EVAL_POSITIONS)

    def evaluator(policy: ChunkTransformerPolicy, step: int) -> dict[str, float]:
        was_training = policy.training
        policy.eval()
        try:
            results, _ = run_episodes(policy, encoder, env_cfg, episodes, n_envs, progress=False)
        finally:
            policy.train(was_training)
        s = summarize(results)
        return {"success_rate": s["success_rate"], "ci95_low": s["ci95"][0], "ci95_high": s["ci95"][1]}

    return evaluator
