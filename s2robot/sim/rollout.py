"""Closed-loop evaluation episodes: a policy picks cubes in gymnasium envs, encoding camera frames live.

Each control step, every running episode's camera frames are encoded in one batch by the frozen S²
encoder (on the GPU when present), the policy's ``act`` turns features + proprio into actions (keeping
its own 16-step history), and the envs step. Episodes run in waves in a gymnasium ``AsyncVectorEnv``
(one worker process per slot: batching the encoder over slots is the point) or, with ``n_envs=0``, one
after another in this process; both give the same results for the same seeds. Every episode's lift and grasp
trace is kept to say why it failed (``classify_failure``).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from s2robot.common.stop import StopRequested, end_processes, interruptible, stop_requests, worker_signals
from s2robot.common.timing import round_trip_summary
from s2robot.data.keys import feat_cameras, feat_key
from s2robot.sim.env import EnvConfig, make_eval_env
from s2robot.vision.oracle import ORACLE

VIDEO_SIZE = (240, 320)  # (H, W) of evaluation videos [px]
Encoder = Callable[[np.ndarray], torch.Tensor]  # frames (N, S, S, 3) uint8 -> features (N, F)
# Lift above rest [m] at which the cube has left the table: tipping the 4 cm cube onto an edge raises its centre
# by only 0.83 cm, so a cube this high is off the table, not knocked over.
OFF_TABLE = 0.01
FAILURE_MODES = ("missed_grasp", "dropped", "lifted_too_little", "timeout")


@dataclass(frozen=True)
class Episode:
    """One evaluation episode: cube position ``position`` (index into the positions), repeat, env seed."""

    position: int
    cube_xy: tuple[float, float]
    repeat: int
    seed: int


@dataclass
class EpisodeResult:
    position: int
    cube_xy: tuple[float, float]
    repeat: int
    seed: int
    success: bool
    steps_to_success: int | None  # control steps until the first success; None if never
    steps: int  # steps run
    max_lift: float  # highest cube lift above rest [m]
    final_fingertip: list[float] = field(default_factory=list)  # (3,) [m], for diagnostics
    failure_mode: str | None = None  # one of FAILURE_MODES (see classify_failure); None for a success
    final_lift: float = 0.0  # cube lift above rest at the last step [m]
    nearest_demo: float | None = None  # distance to the nearest training-demo cube [m]; None when not known
    clipped_steps: int = 0  # steps whose action the env clipped to its bounds (a policy pushing past them)
    timing: dict | None = None  # a real arm's control-loop deadlines (s2robot.common.timing.LoopTimer.summary)
    round_trip: dict | None = None  # a remote policy server's round trip per step (common.timing.round_trip_summary)


def classify_failure(lift: Sequence[float], grasped: Sequence[bool], success: bool, success_height: float
                     ) -> str | None:
    """Why an episode failed, from its per-step trace (reset state first); None when it succeeded.

    lift: (T,) cube lift above its resting height [m]; grasped: (T,) both finger pads touch the cube;
    success_height: the env's success lift [m]. The cube was *held off the table* at a step where it was grasped
    and lifted ≥ OFF_TABLE. The first that applies:

    - ``missed_grasp``: never held off the table (the gripper missed it, closed beside it, or pushed or tipped it);
    - ``dropped``: held off the table, and back below OFF_TABLE at the last step (it fell, or was put down);
    - ``lifted_too_little``: held off the table, still up at the end, never lifted to ``success_height``;
    - ``timeout``: anything else that ran out of steps (e.g. up at the success height but never counted as a
      success: one pad touching, or the gripper command open).
    """
    if success:
        return None
    lift_a, grasped_a = np.asarray(lift, float), np.asarray(grasped, bool)
    if lift_a.shape != grasped_a.shape or lift_a.ndim != 1 or len(lift_a) == 0:
        raise ValueError(f"lift and grasped must be equal-length non-empty traces (T,), got shapes {lift_a.shape}, "
                         f"{grasped_a.shape}")
    if not (grasped_a & (lift_a >= OFF_TABLE)).any():
        return "missed_grasp"
    if lift_a[-1] < OFF_TABLE:
        return "dropped"
    if lift_a.max() < success_height:
        return "lifted_too_little"
    return "timeout"


def eval_episodes(positions: Sequence[Sequence[float]], repeats: int | Sequence[int] = 1, seed: int = 1000
                  ) -> list[Episode]:
    """Every position × repeat, position-major; seeds ``seed + i`` in that order. ``repeats``: one count for every
    position, or one per position."""
    counts = [repeats] * len(positions) if isinstance(repeats, int) else list(repeats)
    if len(counts) != len(positions):
        raise ValueError(f"{len(counts)} repeat counts for {len(positions)} positions")
    eps = [(p, tuple(map(float, xy)), r) for (p, xy), n in zip(enumerate(positions), counts, strict=True)
           for r in range(n)]
    return [Episode(p, xy, r, seed + i) for i, (p, xy, r) in enumerate(eps)]


class _SequentialEnvs:
    """The vector-env calls ``run_episodes`` makes, for one in-process env stepped slot by slot."""

    def __init__(self, envs: list[gym.Env]) -> None:
        self.envs = envs

    def reset(self, seed: list[int], options: dict) -> tuple[dict, dict]:
        outs = [e.reset(seed=s, options=options) for e, s in zip(self.envs, seed, strict=True)]
        return _stack([o for o, _ in outs]), _stack([i for _, i in outs])

    def step(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        outs = [e.step(a) for e, a in zip(self.envs, actions, strict=True)]
        obs, rew, term, trunc, info = zip(*outs, strict=True)
        return _stack(obs), np.array(rew), np.array(term), np.array(trunc), _stack(info)

    def close(self) -> None:
        for e in self.envs:
            e.close()


def slot_info(info: dict, key: str, i: int) -> Any:
    """Slot ``i``'s ``info[key]`` from a vector env's info: an array (``_SequentialEnvs``), or, for a dict-valued
    key, gymnasium's dict of per-key arrays with a ``_<key>`` mask (``AsyncVectorEnv``); None where a slot has none."""
    value = info[key]
    if isinstance(value, dict):
        if not info.get(f"_{key}", np.ones(i + 1, bool))[i]:
            return None
        return {k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in value.items()
                if not k.startswith("_")}
    return value[i]


def _stack(dicts: Sequence[dict]) -> dict:
    keys = set.intersection(*(set(d) for d in dicts))
    return {k: np.stack([np.asarray(d[k]) for d in dicts]) for k in keys}


def _worker_env(env_cfg: EnvConfig, index: int, video_size: tuple[int, int] | None, parent_pid: int) -> gym.Env:
    """``make_eval_env`` in a vector-env worker, which dies with the evaluating process (no orphans) and closes its
    env when the evaluation stops it (``common.stop.worker_signals``; gymnasium's worker closes the env on the
    ``StopRequested`` that SIGTERM raises)."""
    worker_signals(parent_pid)
    try:
        return make_eval_env(env_cfg, index, video_size)
    except StopRequested:  # stopped while starting (the half-built env closed itself): leave without a traceback
        sys.exit(0)


def _close_envs(envs: Any, vectorized: bool) -> None:
    """Close the envs, never waiting on a stuck worker: every worker closes its env on SIGTERM (an arm env stops its
    arm) and is killed if it has not exited after a grace (``common.stop.end_processes``)."""
    if not vectorized:
        envs.close()
        return
    if envs.closed:
        return
    end_processes(envs.processes)
    envs.closed = True  # the workers are gone: gymnasium's close would wait on their answers
    for pipe in envs.parent_pipes:
        if pipe is not None:
            pipe.close()


def _stopped(stop: StopRequested, finished: int, total: int, recorded: bool) -> StopRequested:
    kept = ("their waves are recorded: the same command goes on from them" if recorded
            else "no results are written")
    return StopRequested(stop.signum, f"{stop}: {finished} of {total} episodes had finished ({kept}); the episodes in "
                                      "flight were ended and are not counted")


def _make_envs(env_cfg: EnvConfig, n: int, video_slots: int, vectorized: bool) -> Any:
    sizes = [VIDEO_SIZE if i < video_slots else None for i in range(n)]
    if not vectorized:
        return _SequentialEnvs([make_eval_env(env_cfg, i, size) for i, size in enumerate(sizes)])
    fns = [functools.partial(_worker_env, env_cfg, i, size, os.getpid()) for i, size in enumerate(sizes)]
    return gym.vector.AsyncVectorEnv(fns, context="spawn", autoreset_mode=gym.vector.AutoresetMode.DISABLED)


def _dead_worker(envs: Any, wave: list[Episode], error: BaseException) -> RuntimeError:
    """The error to raise when an env worker died under ``envs.reset``/``step`` (gymnasium raises a bare
    EOFError): which slot, which process, and the episodes that were running."""
    procs = getattr(envs, "processes", [])
    deadline = time.monotonic() + 2.0  # the pipe breaks a moment before the dead process can be reaped
    while not (dead := [(i, p) for i, p in enumerate(procs) if p.exitcode is not None]) and time.monotonic() < deadline:
        time.sleep(0.05)
    who = (f"env worker {dead[0][0]} (pid {dead[0][1].pid}, exit code {dead[0][1].exitcode})" if dead
           else "an env worker")
    for p in procs:  # the others go too: the vector env cannot continue, and closing it would wait on the dead
        p.kill()
    for p in procs:
        p.join(timeout=10)  # returns as soon as it is reaped; a loaded machine can take seconds
    envs.closed = True  # so close() does not wait for the step the dead worker never answers
    eps = ", ".join(f"position {e.position} repeat {e.repeat}" for e in wave)
    return RuntimeError(f"{who} died while running {eps} ({type(error).__name__}); the waves that finished before it "
                        "are kept where the evaluation records them (scripts/eval.py: run the same command to go on)")


class _Wave:
    """Book-keeping of one wave of ``width`` slots: per-slot success step, steps, lift and grasp traces, video
    frames."""

    def __init__(self, wave: list[Episode], width: int, start: int, videos: int, info: dict,
                 success_height: float) -> None:
        self.wave, self.start, self.success_height = wave, start, success_height
        self.done = np.zeros(width, bool)
        self.done[len(wave):] = True  # padding slots of the last wave are ignored
        self.success_step = np.full(width, -1)
        self.steps = np.zeros(width, int)
        self.lift = [np.asarray(info["lift_height"], float).copy()]  # per step (width,) [m], reset state first
        self.grasped = [np.asarray(info["is_grasped"], bool).copy()]
        self.film = [start + i < videos for i in range(width)]
        self.frames = {start + i: [info["video_frame"][i]] for i in range(width) if self.film[i]}
        self.tip = np.zeros((width, 3))
        self.clipped = np.zeros(width, int)
        self.timing: dict[int, dict] = {}
        self.round_trips: list[float] | None = None  # a remote policy's round trip of each step [s] (policy.remote)

    def update(self, t: int, term: np.ndarray, trunc: np.ndarray, info: dict) -> list[int]:
        """Record step t's outcome; returns the slots (of real episodes) that ended at this step."""
        running = ~self.done
        self.steps[running] += 1
        self.lift.append(np.asarray(info["lift_height"], float).copy())
        self.grasped.append(np.asarray(info["is_grasped"], bool).copy())
        hit = running & np.asarray(info["is_success"], bool) & (self.success_step < 0)
        self.success_step[hit] = t + 1
        for i in np.flatnonzero(running):
            if self.film[i]:
                self.frames[self.start + i].append(info["video_frame"][i])
        self.tip[running] = np.asarray(info["fingertip_pos"], float)[running]  # an ended slot's env keeps stepping
        self.clipped[running] = np.asarray(info["clipped_steps"], int)[running]
        ended = np.flatnonzero(running & (term | trunc))
        for i in ended if "timing" in info else ():  # the arm env reports its loop timing when an episode ends
            if (timing := slot_info(info, "timing", int(i))) is not None:
                self.timing[int(i)] = timing
        self.done |= term | trunc
        return [int(i) for i in ended]

    def result(self, i: int) -> EpisodeResult:
        e, t, ok = self.wave[i], int(self.steps[i]), bool(self.success_step[i] >= 0)
        lift = np.array([step[i] for step in self.lift[: t + 1]])  # (t + 1,) this slot's trace
        grasped = np.array([step[i] for step in self.grasped[: t + 1]])
        return EpisodeResult(e.position, e.cube_xy, e.repeat, e.seed, ok, int(self.success_step[i]) if ok else None,
                             t, float(lift.max()), [float(v) for v in self.tip[i]],
                             classify_failure(lift, grasped, ok, self.success_height), float(lift[-1]),
                             clipped_steps=int(self.clipped[i]), timing=self.timing.get(i),
                             round_trip=None if self.round_trips is None else round_trip_summary(self.round_trips[:t]))


def step_features(encoder: Any, cameras: list[str], obs: dict, info: dict, slots: list[Episode],
                  device: torch.device, running: np.ndarray) -> dict[str, torch.Tensor]:
    """This step's features {feat_<camera>: (N, F)}: frames through the encoder, or the oracle's privileged state.

    Only the ``running`` slots' frames are encoded; slots whose episode has ended (or that pad the last wave) get
    zeros, which the policy's output for them is never used with. A wave lasts as long as its longest episode, so
    this skips most of a wave's encoding when most of its episodes ended early (successes end at ~28 steps, a
    failure runs to ``max_steps``). A compiled encoder always gets all N frames: it compiles once per batch shape.
    """
    if cameras == [ORACLE]:
        state = encoder.features(info["cube_pos"], obs["proprio"], [e.seed for e in slots])  # (N, 4)
        return {feat_key(ORACLE): torch.from_numpy(state).to(device)}
    if running.all() or getattr(getattr(encoder, "cfg", None), "compile", None):
        return {feat_key(c): encoder(obs[c]).to(device) for c in cameras}  # (N, F) each
    idx = np.flatnonzero(running)
    feats = {}
    for c in cameras:
        part = encoder(np.asarray(obs[c])[idx]).to(device)  # (n running, F)
        full = part.new_zeros((len(running), part.shape[1]))  # (N, F)
        full[torch.as_tensor(idx, device=device)] = part
        feats[feat_key(c)] = full
    return feats


def _run_wave(policy: Any, encoder: Encoder, envs: Any, wave: list[Episode], width: int, start: int,
              max_steps: int, videos: int, bar: tqdm, success_height: float, variation: str = "none"
              ) -> tuple[list[EpisodeResult], dict[int, list[np.ndarray]]]:
    cameras = feat_cameras(policy.feature_keys)
    device = next(policy.parameters()).device
    slots = wave + [wave[0]] * (width - len(wave))  # pad the last wave; extra slots are ignored
    scene = {"variation": variation} if variation != "none" else {}
    try:
        # label: the position's mark on an operator's sheet (the arm env); variation: the scene drawn from the seed
        per_env = [{"cube_xy": e.cube_xy, "label": str(e.position + 1), **scene} for e in slots]
        obs, info = envs.reset(seed=[e.seed for e in slots], options={"per_env": per_env})
    except (EOFError, BrokenPipeError, ConnectionResetError) as e:
        raise _dead_worker(envs, wave, e) from e
    policy.reset(batch_size=width)
    state, results = _Wave(wave, width, start, videos, info, success_height), []
    state.round_trips = getattr(policy, "round_trips", None)  # a remote policy's, filled as it acts
    for t in range(max_steps):
        feats = step_features(encoder, cameras, obs, info, slots, device, ~state.done)
        action = policy.act({**feats, "proprio": obs["proprio"]}).float().cpu().numpy()  # (N, A)
        try:
            obs, _, term, trunc, info = envs.step(action.astype(np.float32))
        except (EOFError, BrokenPipeError, ConnectionResetError) as e:
            raise _dead_worker(envs, wave, e) from e
        for i in state.update(t, term, trunc, info):
            bar.update(1)
            if i < len(wave):
                results.append(state.result(i))
        if state.done.all():
            break
    for i in np.flatnonzero(~state.done):  # max_steps reached without truncation (cannot happen normally)
        results.append(state.result(i))
        bar.update(1)
    return results, state.frames


WaveDone = Callable[[int, list["EpisodeResult"], dict[int, list[np.ndarray]]], None]  # (wave, results, frames)


def wave_width(n_episodes: int, n_envs: int) -> int:
    """Episodes per wave of ``run_episodes``: wave k runs episodes [k·width, (k + 1)·width) side by side."""
    return min(n_envs, n_episodes) if n_envs > 0 else 1


@torch.no_grad()
def run_episodes(policy: Any, encoder: Encoder, env_cfg: EnvConfig, episodes: Sequence[Episode], n_envs: int = 16,
                 videos: int = 0, progress: bool = True, variation: str = "none", waves: Sequence[int] | None = None,
                 on_wave: WaveDone | None = None) -> tuple[list[EpisodeResult], dict[int, list[np.ndarray]]]:
    """Roll ``policy`` (``reset``/``act``) out on ``episodes`` in waves of ``n_envs`` parallel envs (0: one at
    a time here), every episode's scene varied by ``variation`` (``envs.variation``, drawn from its seed).

    waves: run only these waves (``wave_width``) of ``episodes``, each exactly as a run of all of them runs it (the
        same slots, batch and videos), so a share of the waves gives the results a whole run gives for them
        (``workflows.eval_shards``); None: all. on_wave: called with (wave, its results, its video frames) as each
        wave ends.
    Returns the results (in ``episodes`` order, each with its failure mode) and the video frames of the first
    ``videos`` episodes ({episode index: [(H, W, 3) uint8 frames]}). SIGTERM or Ctrl-C meanwhile (``common.stop``)
    ends the episodes in flight, closes the envs (an arm env stops its arm) and raises ``StopRequested`` saying how
    many had finished; an ``on_wave`` call that runs is waited for.
    """
    from envs import LIFT_SUCCESS_HEIGHT  # the task's success lift, for classify_failure (envs is torch-free)

    cameras = feat_cameras(policy.feature_keys)
    missing = [c for c in cameras if c not in env_cfg.cameras and c != ORACLE]
    if missing:
        raise ValueError(f"the policy reads cameras {cameras} but the env renders {list(env_cfg.cameras)}")
    rendered = [c for c in cameras if c != ORACLE]  # the oracle reads privileged state, not frames
    env_cfg = EnvConfig(**{**asdict(env_cfg), "cameras": rendered, "terminate_on_success": True,
                           "action_mode": getattr(policy, "action_space", env_cfg.action_mode)})
    videos = len(episodes) if videos < 0 else min(videos, len(episodes))
    width = wave_width(len(episodes), n_envs)
    waves = range(-(-len(episodes) // width)) if waves is None else waves
    results: list[EpisodeResult] = []
    frames: dict[int, list[np.ndarray]] = {}
    total = sum(len(episodes[k * width : (k + 1) * width]) for k in waves)
    bar = tqdm(total=total, unit="episode", desc="evaluating", disable=not progress)
    if not total:
        bar.close()
        return results, frames
    envs = None
    with stop_requests():  # SIGTERM / Ctrl-C: end the episodes, close the envs (stopping arms), raise StopRequested
        try:
            with interruptible():
                envs = _make_envs(env_cfg, width, min(videos, width), n_envs > 0)
            for k in waves:
                wave = list(episodes[k * width : (k + 1) * width])
                with interruptible():
                    res, clips = _run_wave(policy, encoder, envs, wave, width, k * width, env_cfg.max_steps, videos,
                                           bar, LIFT_SUCCESS_HEIGHT, variation)
                if on_wave is not None:
                    on_wave(k, res, clips)  # not interruptible: a stop meanwhile waits for it
                results += res
                frames |= clips
        except StopRequested as stop:
            raise _stopped(stop, len(results), total, on_wave is not None) from None
        finally:
            if envs is not None:
                _close_envs(envs, n_envs > 0)
            bar.close()
    order = {(e.position, e.repeat): k for k, e in enumerate(episodes)}
    results.sort(key=lambda r: order[(r.position, r.repeat)])
    return results, frames
