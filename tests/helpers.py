"""Small data builders shared by the tests (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from s2robot.data.store import EpisodeStore
from s2robot.vision.encoder import EncoderConfig

MICRO_S2 = {"variant": "vit-micro", "weights": "random", "img_sizes": [32, 64], "device": "cpu", "dtype": "float32"}


def micro_encoder_config(**overrides: object) -> EncoderConfig:
    """The random 2-layer 32-px ViT with S² at 32²+64² (feature dim 64)."""
    return EncoderConfig(**{**MICRO_S2, **overrides})


def make_demos(path: Path, lengths: tuple[int, ...] = (5, 7, 4), seed: int = 0, size: int = 32,
               cubes: bool = False) -> Path:
    """A demo store of random frames (``rgb_front``), proprio, actions as deltas (``action``) and as absolute targets
    (``target``, what policies learn by default) with the given episode lengths; with ``cubes``, episode i's info
    records the cube at (0.45 + 0.01 i, 0.0) as the recorder does."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore.create(path, attrs={"env_id": "test"})
    for i, n in enumerate(lengths):
        store.add_episode(
            {"rgb_front": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
             "proprio": rng.normal(size=(n, 8)).astype(np.float32),
             "action": rng.normal(size=(n, 8)).astype(np.float32),
             "target": rng.normal(size=(n, 8)).astype(np.float32)},
            info={"seed": i, "success": True, **({"cube_xy": [0.45 + 0.01 * i, 0.0]} if cubes else {})},
        )
    return path


def tiny_checkpoint(folder: Path, max_steps: int = 5, steps: int = 2, arm: bool = False) -> Path:
    """A tiny policy on a random micro encoder (``steps`` training steps on 32-px synthetic demos, episodes of
    ``max_steps`` when evaluated); with ``arm``, a copy that says it was trained on the arm in franky-sim
    (``env=franka_sim``), so evaluating it drives franky-sim."""
    from s2robot.common.runlog import WandbConfig
    from s2robot.policy.configuration import PolicyConfig
    from s2robot.sim.env import EnvConfig
    from s2robot.workflows.train import TrainConfig, train

    make_demos(folder / "d.zarr", (12, 9, 14, 10), cubes=True)
    cfg = TrainConfig(name="t", runs_dir=str(folder / "runs"), encoder=micro_encoder_config(),
                      demos=str(folder / "d.zarr"), policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, ff_mult=2),
                      env=EnvConfig(image_size=32, max_steps=max_steps), steps=steps, batch_size=8, progress=False,
                      wandb=WandbConfig(mode="disabled"))
    checkpoint = Path(train(cfg))
    if not arm:
        return checkpoint
    copy = folder / "arm" / "checkpoints" / "last"
    shutil.copytree(checkpoint, copy)
    env = json.loads((copy / "env.json").read_text())
    env.update(id="s2robot/FrankaReal-v0", options={"host": "franky-sim"})
    (copy / "env.json").write_text(json.dumps(env))
    return copy


def import_probe(folder: Path, name: str = "s2robot_import_probe") -> Path:
    """Put a module ``name`` in ``folder`` (add ``folder`` to sys.path yourself) that touches the returned file when it
    is imported: proof of whether anything imported it."""
    flag = folder / f"{name}.imported"
    (folder / f"{name}.py").write_text(f"from pathlib import Path\nPath({str(flag)!r}).touch()\n")
    return flag


class SleepyJob:
    """An EpisodeJob for pool tests: the episode of ``die_at`` kills its worker; others print the worker's pid
    once and take ``seconds``."""

    def __init__(self, seconds: float = 0.05, die_at: int | None = None) -> None:
        self.seconds, self.die_at = seconds, die_at

    def setup(self) -> None:
        import os

        print(f"worker {os.getpid()}", flush=True)

    def run(self, state: None, seed: int) -> int:
        import os
        import signal
        import time

        if seed == self.die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.seconds)
        return seed

    def close(self, state: None) -> None:
        pass
