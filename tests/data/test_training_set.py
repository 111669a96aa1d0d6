"""Training data loading: non-finite values are refused at the boundary, naming key, episode and step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import make_demos

from s2robot.data.features import build_feature_cache
from s2robot.data.training_set import check_finite, load_training_data, select_action_space
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder


def test_check_finite_names_episode_and_step() -> None:
    ends = np.array([5, 12, 16])
    data = {"action": np.zeros((16, 8), np.float32), "grasped": np.zeros(16, bool)}
    check_finite(data, ends, Path("c.zarr"))
    data["action"][14, 3] = np.inf
    with pytest.raises(ValueError, match=r"action holds a non-finite value .* episode 2, step 2"):
        check_finite(data, ends, Path("c.zarr"))


def test_nan_written_into_a_cache_is_refused_before_training(tmp_path: Path) -> None:
    """A NaN edited into a cached validation episode stops training at load time (not at the end, val/loss NaN)."""
    demos = make_demos(tmp_path / "d.zarr", lengths=(5, 7, 4, 6))
    enc = FrozenS2Encoder(EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32], dtype="float32"))
    cache = build_feature_cache(demos, enc, progress=False)
    load_training_data(cache, enc.fingerprint, 4, 4, True, 0.25, 0, 4)  # clean: loads
    feats = zarr.open_array(cache / "data" / "feat_front", mode="r+")
    feats[5 + 7 + 2, 0] = np.nan  # episode 2, step 2
    with pytest.raises(ValueError, match=r"feat_front holds a non-finite value .* episode 2, step 2"):
        load_training_data(cache, enc.fingerprint, 4, 4, True, 0.25, 0, 4)


def test_store_info_lists_non_finite_values(tmp_path: Path) -> None:
    """`python -m s2robot.workflows.store info` shows where a NaN edited into a store is (key, episode, step)."""
    from s2robot.data.store import EpisodeStore
    from s2robot.workflows.store import info_text

    demos = make_demos(tmp_path / "d.zarr", lengths=(5, 7, 4))
    assert "NON-FINITE" not in info_text(EpisodeStore.open(demos))
    zarr.open_array(demos / "data" / "action", mode="r+")[6, 1] = np.nan  # episode 1, step 1
    text = info_text(EpisodeStore.open(demos))
    assert "NON-FINITE   action: 1 steps with NaN/inf, first at episode 1, step 1" in text


def test_action_space_selects_label_and_executed_keys() -> None:
    data = {"proprio": np.zeros((3, 8)), "action": np.ones((3, 8)), "action_executed": np.full((3, 8), 2.0),
            "target": np.full((3, 8), 3.0), "target_executed": np.full((3, 8), 4.0)}
    absolute = select_action_space(data, "absolute", Path("c.zarr"))
    assert sorted(absolute) == ["action", "action_executed", "proprio"]
    assert absolute["action"][0, 0] == 3.0 and absolute["action_executed"][0, 0] == 4.0
    assert select_action_space(data, "delta", Path("c.zarr"))["action_executed"][0, 0] == 2.0
    old = {"proprio": data["proprio"], "action": data["action"]}  # recorded before targets were stored
    assert sorted(select_action_space(old, "delta", Path("c.zarr"))) == ["action", "proprio"]
    with pytest.raises(ValueError, match=r"c\.zarr has no 'target' key.*Re-record"):
        select_action_space(old, "absolute", Path("c.zarr"))


def test_training_cube_positions_come_from_the_episode_infos(tmp_path: Path) -> None:
    """The training split's cube positions (recorded in each episode's info) reach TrainData; None without them."""
    enc = FrozenS2Encoder(EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32], dtype="float32"))
    plain = build_feature_cache(make_demos(tmp_path / "a.zarr", lengths=(5, 7, 4, 6)), enc, progress=False)
    assert load_training_data(plain, enc.fingerprint, 4, 4, True, 0.25, 0, 4).train_cube_xy is None
    with_cubes = build_feature_cache(make_demos(tmp_path / "b.zarr", lengths=(5, 7, 4, 6), cubes=True), enc,
                                     progress=False)
    xy = load_training_data(with_cubes, enc.fingerprint, 4, 4, True, 0.25, 0, 4).train_cube_xy
    assert len(xy) == 3 and all(p in [[0.45 + 0.01 * i, 0.0] for i in range(4)] for p in xy)
