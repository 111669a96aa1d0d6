"""Frame sources for encoder pretraining and feature probes: demo stores and a rendering generator.

The generator renders the cube-pick scene as the policy sees it: the scripted expert (with noise) picks
cubes placed over the workspace and a margin beyond it, from randomly perturbed start postures, so arm
poses lie near the expert's trajectories (gripper open and closed, cube resting and lifted in the gripper).
Optionally it varies the scene (``variation``: ``envs.variation``, e.g. ``standard``). Every frame comes with privileged
labels for probes: ``cube_pos`` (3,) [m], ``fingertip_pos`` (3,) [m], ``gripper`` (1,) opening [m].

Generated frames are written once to an ``EpisodeStore`` (one episode per cube placement; keys
``rgb_<camera>``, ``proprio``, the labels) and reused: the same config maps to the same store, a finished
store is reused, and an interrupted generation resumes. Demo stores hold frames but no labels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from s2robot.common.checks import check_image_side, check_seed
from s2robot.data.keys import rgb_cameras, rgb_key
from s2robot.data.store import EpisodeStore
from s2robot.sim.env import EnvConfig, check_variation, make_env
from s2robot.sim.episode import StopAfterSuccess, run_episode
from s2robot.sim.pool import seed_ordered

KIND = "s2robot.GeneratedFrames"
LABELS = ("cube_pos", "fingertip_pos", "gripper")
LABEL_DIMS = {"cube_pos": 3, "fingertip_pos": 3, "gripper": 1}


@dataclass
class GeneratorConfig:
    """Rendered cube-pick frames with privileged labels.

    n_frames: frames to generate per camera (0 = none); whole episodes, so the store holds at least this
    cameras: cameras rendered (the policy uses ``front``)
    image_size: side of the square frames [px]
    seed: seed of the first episode; episode k uses seed + k
    margin: how far beyond the cube workspace cubes are also placed, on every side [m]
    joint_noise: half-width of the uniform noise on the start posture [rad]
    noise_std_max: expert noise std is drawn uniformly in [0, this] per episode [rad]
    extra_steps_max: steps kept after a success (cube lifted higher), drawn in [0, this]
    max_steps: longest episode [control steps]
    variation: the scene variation each episode draws (``envs.variation``: ``none``, ``standard``, ...)
    workers: rendering processes
    out: store path; default ``runs/frames/gen-<hash of this config>.zarr``
    """

    n_frames: int = 0
    cameras: list[str] = field(default_factory=lambda: ["front"])
    image_size: int = 224
    seed: int = 0
    margin: float = 0.05
    joint_noise: float = 0.3
    noise_std_max: float = 0.03
    extra_steps_max: int = 15
    max_steps: int = 80
    variation: str = "none"
    workers: int = 2
    out: str | None = None

    def __post_init__(self) -> None:
        if self.n_frames < 0 or not self.cameras:
            raise ValueError(f"need n_frames ≥ 0 and a camera; got {self.n_frames}, {self.cameras}")
        check_image_side(self.image_size)
        check_seed(self.seed)
        check_variation(self.variation)

    def key(self) -> str:
        """Hash of everything that changes the frames (not ``n_frames``, ``workers`` or ``out``). The scene as built
        hashes as it did before variations existed (``randomize_appearance: false``), so its stores and the
        provenance of the weights pretrained on them keep their keys."""
        d = {k: v for k, v in asdict(self).items() if k not in ("n_frames", "workers", "out", "variation")}
        d |= {"randomize_appearance": False} if self.variation == "none" else {"variation": self.variation}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def store_path(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / "frames" / f"gen-{self.key()}.zarr"


@dataclass
class FrameDataConfig:
    """Where pretraining and probe frames come from: demo stores and/or the generator.

    stores: paths of demo (or generated) stores to read ``rgb_<camera>`` frames from
    camera: camera whose frames are used
    max_frames_per_store: take at most this many frames of each store, evenly spaced (probes: of the generated
        store too, to spread few frames over many episodes); None = all
    generator: rendered frames (used when ``generator.n_frames > 0``)
    """

    stores: list[str] = field(default_factory=list)
    camera: str = "front"
    max_frames_per_store: int | None = None
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)


@dataclass
class LabeledFrames:
    """Frames (T, S, S, 3) uint8, labels ``{name: (T, d) float32}`` (``LABELS``), episode index (T,)."""

    frames: np.ndarray
    labels: dict[str, np.ndarray]
    episodes: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


# ------------------------------------------------------------------------------------------ generator
def _observe_labeled(cameras: list[str], obs: dict[str, np.ndarray], info: dict[str, Any], label: np.ndarray,
                     executed: np.ndarray) -> dict[str, np.ndarray]:
    return {**{rgb_key(cam): obs[cam] for cam in cameras}, "proprio": obs["proprio"],
            "cube_pos": info["cube_pos"].astype(np.float32), "fingertip_pos": info["fingertip_pos"].astype(np.float32),
            "gripper": obs["proprio"][7:8].astype(np.float32)}


def generate_episode(env: Any, cfg: GeneratorConfig, seed: int) -> dict[str, np.ndarray]:
    """One expert episode from a random cube placement and start posture, in a scene drawn from ``cfg.variation``:
    frames + labels per step."""
    from envs.expert import ScriptedExpert
    from envs.positions import WORKSPACE

    rng = np.random.default_rng(seed)  # draws, in order: cube, expert noise, extra steps, expert
    lo = (WORKSPACE.x_min - cfg.margin, WORKSPACE.y_min - cfg.margin)
    hi = (WORKSPACE.x_max + cfg.margin, WORKSPACE.y_max + cfg.margin)
    cube_xy = rng.uniform(lo, hi)
    stop = StopAfterSuccess(cfg.max_steps)

    def start(obs: dict, info: dict) -> Any:
        expert = ScriptedExpert(env, noise_std=rng.uniform(0.0, cfg.noise_std_max), rng=rng)
        stop.extra = int(rng.integers(0, cfg.extra_steps_max + 1))
        return expert.act

    options = {"cube_xy": cube_xy, **({"variation": cfg.variation} if cfg.variation != "none" else {})}
    data, _ = run_episode(env, seed, start, partial(_observe_labeled, list(cfg.cameras)), options, stop)
    return data


def _make_env(cfg: GeneratorConfig) -> Any:
    env_cfg = EnvConfig(cameras=list(cfg.cameras), image_size=cfg.image_size, max_steps=cfg.max_steps + 1,
                        terminate_on_success=False, joint_noise=cfg.joint_noise)
    return make_env(env_cfg, render_mode=None)


@dataclass(frozen=True)
class _FrameJob:
    """Frame generation as a ``sim.pool`` job: one env per worker."""

    cfg: GeneratorConfig

    def setup(self) -> Any:
        return _make_env(self.cfg)

    def run(self, env: Any, seed: int) -> dict[str, np.ndarray]:
        return generate_episode(env, self.cfg, seed)

    def close(self, env: Any) -> None:
        env.close()


def generate_frames(cfg: GeneratorConfig, progress: bool = True) -> Path:
    """Render until the generator store holds ≥ ``cfg.n_frames`` frames; returns its path (reused if done)."""
    path = cfg.store_path()
    attrs = {"kind": KIND, "generator": asdict(cfg) | {"n_frames": None, "workers": None, "out": None},
             "key": cfg.key(), "cameras": list(cfg.cameras), "image_size": cfg.image_size}
    if path.exists():
        store = EpisodeStore.open(path, mode="a")
        if store.attrs.get("key") != cfg.key():
            raise ValueError(f"{path} was generated with another config (key {store.attrs.get('key')}, this "
                             f"config {cfg.key()}); delete it or set generator.out to another path")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        store = EpisodeStore.create(path, attrs=attrs)
    if store.n_steps >= cfg.n_frames:
        return path
    bar = tqdm(total=cfg.n_frames, initial=store.n_steps, unit="frame", desc=f"rendering {path.name}",
               disable=not progress)
    episodes = seed_ordered(_FrameJob(cfg), cfg.seed + store.n_episodes, cfg.workers)
    try:
        for seed, episode in episodes:  # in seed order: the store does not depend on `workers`
            store.add_episode(episode, info={"seed": seed, "length": len(episode["proprio"])})
            bar.update(len(episode["proprio"]))
            if store.n_steps >= cfg.n_frames:
                break
    finally:
        episodes.close()
        bar.close()
    return path


# ------------------------------------------------------------------------------------------- reading
def _spaced(n: int, k: int | None) -> np.ndarray:
    """``k`` indices evenly spaced over ``range(n)`` (all when k is None or ≥ n)."""
    return np.arange(n) if k is None or k >= n else np.linspace(0, n - 1, k).round().astype(np.int64)


def read_frames(path: str | Path, camera: str, max_frames: int | None = None) -> np.ndarray:
    """``rgb_<camera>`` frames (T, S, S, 3) uint8 of a store, at most ``max_frames`` evenly spaced."""
    store = EpisodeStore.open(path)
    key = rgb_key(camera)
    if key not in store.keys:
        cams = rgb_cameras(store.keys)
        raise ValueError(f"{path} has no frames of camera {camera!r}; cameras there: {cams}")
    return store.get_steps(key, 0, store.n_steps)[_spaced(store.n_steps, max_frames)]


def read_labeled(path: str | Path, camera: str, max_frames: int | None = None) -> LabeledFrames:
    """Frames with privileged labels from a generated store (demo stores have no labels)."""
    store = EpisodeStore.open(path)
    missing = [k for k in LABELS if k not in store.keys]
    if missing:
        raise ValueError(f"{path} has no privileged labels {missing} (a demo store records only frames, "
                         "proprio and actions); probe on generated frames instead (generator.n_frames > 0)")
    idx = _spaced(store.n_steps, max_frames)
    labels = {k: store.get_steps(k, 0, store.n_steps)[idx].astype(np.float32) for k in LABELS}
    episodes = np.repeat(np.arange(store.n_episodes), store.episode_lengths)[idx]
    return LabeledFrames(read_frames(path, camera, max_frames), labels, episodes)


def paired_frames(cfg: FrameDataConfig, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The generator's frames in its varied scenes and the same frames in the scene as built: (varied, clean), each
    (T, S, S, 3) uint8, row t of one the same state (cube, arm, camera step) as row t of the other. Only generated
    frames pair (demo stores hold one rendering), and only under visual variations (a physical one changes the
    episodes themselves)."""
    gen = cfg.generator
    if cfg.stores or gen.n_frames <= 0 or gen.variation == "none":
        raise ValueError("paired frames come from the generator rendering each episode twice: set "
                         "data.generator.n_frames > 0, data.generator.variation to a visual variation (e.g. "
                         f"standard_visual) and no data.stores; got stores={list(cfg.stores)}, "
                         f"n_frames={gen.n_frames}, variation={gen.variation!r}")
    clean_gen = replace(gen, variation="none", out=gen.out and str(Path(gen.out).with_name(
        f"{Path(gen.out).stem}-clean.zarr")))
    varied, clean = (generate_frames(g, progress) for g in (gen, clean_gen))
    a, b = (read_labeled(p, cfg.camera, gen.n_frames) for p in (varied, clean))
    if len(a) != len(b) or not all(np.allclose(a.labels[k], b.labels[k], atol=1e-5) for k in LABELS):
        raise ValueError(f"variation {gen.variation!r} changed the episodes themselves (a physical factor such as "
                         "cube_size): its frames do not pair with the scene as built; use a visual one "
                         "(standard_visual, visual:high, ...)")
    return a.frames, b.frames


def load_frames(cfg: FrameDataConfig, progress: bool = True) -> np.ndarray:
    """All frames of ``cfg`` (stores, then generated ones) in one (T, S, S, 3) uint8 array."""
    parts = [read_frames(p, cfg.camera, cfg.max_frames_per_store) for p in cfg.stores]
    if cfg.generator.n_frames > 0:
        if cfg.camera not in cfg.generator.cameras:
            raise ValueError(f"camera {cfg.camera!r} is not among generator.cameras {cfg.generator.cameras}")
        path = generate_frames(cfg.generator, progress)
        parts.append(read_frames(path, cfg.camera, cfg.generator.n_frames))
    if not parts:
        raise ValueError("no frames: give demo stores (data.stores=[demos/x.zarr]) and/or generated frames "
                         "(data.generator.n_frames=8000)")
    sizes = {p.shape[1:] for p in parts}
    if len(sizes) > 1:
        raise ValueError(f"frame sources have different image shapes {sorted(sizes)}; use one image size")
    return np.concatenate(parts)
