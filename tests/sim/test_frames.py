"""Frame sources: the rendering generator (labels, reuse, resume, config key) and reading stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from envs.cube_pick import CUBE_REST_Z
from envs.positions import WORKSPACE
from s2robot.data.store import EpisodeStore
from s2robot.sim.frames import FrameDataConfig, GeneratorConfig, generate_frames, load_frames, read_frames, read_labeled


def gen_cfg(tmp_path: Path, **kw: object) -> GeneratorConfig:
    base = {"n_frames": 30, "image_size": 32, "workers": 1, "max_steps": 40, "out": str(tmp_path / "g.zarr")}
    return GeneratorConfig(**(base | kw))


def test_generated_frames_have_privileged_labels(tmp_path: Path) -> None:
    cfg = gen_cfg(tmp_path, cameras=["front", "wrist"])
    data = read_labeled(generate_frames(cfg, progress=False), "front")
    n = len(data)
    assert n >= 30 and data.frames.shape == (n, 32, 32, 3) and data.frames.dtype == np.uint8
    assert {k: v.shape for k, v in data.labels.items()} == {"cube_pos": (n, 3), "fingertip_pos": (n, 3),
                                                           "gripper": (n, 1)}
    cube = data.labels["cube_pos"]
    m = cfg.margin + 1e-6
    assert np.all(cube[:, 0] >= WORKSPACE.x_min - m) and np.all(cube[:, 0] <= WORKSPACE.x_max + m)
    assert np.all(cube[:, 2] >= CUBE_REST_Z - 0.005)
    assert np.all((data.labels["gripper"] >= 0) & (data.labels["gripper"] <= 0.1))
    assert data.frames.std() > 10  # rendered images, not blank
    assert read_frames(cfg.store_path(), "wrist").shape == (n, 32, 32, 3)


def test_generator_reuses_extends_and_refuses_other_configs(tmp_path: Path) -> None:
    path = generate_frames(gen_cfg(tmp_path, n_frames=10), progress=False)
    first = EpisodeStore.open(path)
    n1, ep0 = first.n_steps, first.get_episode(0)["rgb_front"]
    assert generate_frames(gen_cfg(tmp_path, n_frames=5), progress=False) == path  # enough already: reused
    assert EpisodeStore.open(path).n_steps == n1
    generate_frames(gen_cfg(tmp_path, n_frames=n1 + 1), progress=False)  # resumes with the next seeds
    store = EpisodeStore.open(path)
    assert store.n_episodes == 2 and np.array_equal(store.get_episode(0)["rgb_front"], ep0)
    assert [store.episode_info(i)["seed"] for i in range(2)] == [0, 1]
    with pytest.raises(ValueError, match="another config"):
        generate_frames(gen_cfg(tmp_path, n_frames=100, margin=0.0), progress=False)
    assert gen_cfg(tmp_path).key() == gen_cfg(tmp_path, n_frames=99, workers=3).key()


def test_reading_stores_and_errors(tmp_path: Path) -> None:
    demo = EpisodeStore.create(tmp_path / "demo.zarr")
    frames = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    demo.add_episode({"rgb_front": frames, "proprio": np.zeros((12, 8), np.float32)})
    assert np.array_equal(read_frames(tmp_path / "demo.zarr", "front", max_frames=4), frames[[0, 4, 7, 11]])
    with pytest.raises(ValueError, match="no frames of camera 'wrist'"):
        read_frames(tmp_path / "demo.zarr", "wrist")
    with pytest.raises(ValueError, match="no privileged labels"):
        read_labeled(tmp_path / "demo.zarr", "front")
    with pytest.raises(ValueError, match="no frames"):
        load_frames(FrameDataConfig())
    both = load_frames(FrameDataConfig(stores=[str(tmp_path / "demo.zarr")], generator=gen_cfg(tmp_path, n_frames=5)),
                       progress=False)
    assert np.array_equal(both[:12], frames) and len(both) > 12
