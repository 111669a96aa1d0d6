"""Tests for s2robot.data.robomimic: reading robomimic hdf5 datasets as episode sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s2robot.data.robomimic import open_robomimic

h5py = pytest.importorskip("h5py")

SIZE = 16  # frame side [px]
DEMOS = {"demo_10": 4, "demo_2": 3, "demo_0": 5}  # written in this order; robomimic reads demo_0, demo_2, demo_10
ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20, "robots": ["Panda"]}}


def make_demo(k: int, t: int, proprio: bool = True) -> dict[str, dict[str, np.ndarray] | np.ndarray]:
    """One robosuite-like trajectory: actions (T, 7), states (T, 32), rewards/dones (T,), obs of two cameras,
    the robot's eef/gripper state, joint positions and the object state."""
    rng = np.random.default_rng(k)
    obs = {"agentview_image": rng.integers(0, 256, (t, SIZE, SIZE, 3), dtype=np.uint8),
           "robot0_eye_in_hand_image": rng.integers(0, 256, (t, SIZE, SIZE, 3), dtype=np.uint8),
           "robot0_joint_pos": rng.normal(size=(t, 7)), "object": rng.normal(size=(t, 10))}
    if proprio:
        obs |= {"robot0_eef_pos": rng.normal(size=(t, 3)), "robot0_eef_quat": rng.normal(size=(t, 4)),
                "robot0_gripper_qpos": rng.normal(size=(t, 2))}
    return {"actions": rng.uniform(-1, 1, (t, 7)), "states": rng.normal(size=(t, 32)),
            "rewards": (np.arange(t) == t - 1).astype(np.float64), "dones": (np.arange(t) == t - 1).astype(np.int64),
            "obs": obs, "next_obs": {key: np.roll(v, -1, axis=0) for key, v in obs.items()}}


def write_robomimic(path: Path, demos: dict[str, dict], masks: dict[str, list[str]] | None = None) -> None:
    """Write ``demos`` as robomimic's ``robomimic/scripts/dataset_states_to_obs.py`` does: data/<ep>/{actions,
    states, rewards, dones}, obs/<key> and next_obs/<key> gzip-compressed (--compress), attrs model_file (robosuite),
    ep_meta (when the source has one) and num_samples; data attrs total and env_args (json.dumps, indent 4); filter
    keys as ``robomimic/utils/file_utils.py`` ``create_hdf5_filter_key`` writes them: mask/<name> = np.array(demos,
    dtype='S')."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        total = 0
        for ep, traj in demos.items():
            group = data.create_group(ep)
            for key in ("actions", "states", "rewards", "dones"):
                group.create_dataset(key, data=np.array(traj[key]))
            for key, value in traj["obs"].items():
                group.create_dataset(f"obs/{key}", data=value, compression="gzip")
                group.create_dataset(f"next_obs/{key}", data=traj["next_obs"][key], compression="gzip")
            group.attrs["model_file"] = "<mujoco model='base'>" + "<body/>" * 2000 + "</mujoco>"
            group.attrs["ep_meta"] = json.dumps({"lang": f"lift the cube ({ep})", "seed": int(ep[5:])})
            group.attrs["num_samples"] = traj["actions"].shape[0]
            total += traj["actions"].shape[0]
        for name, names in (masks or {}).items():
            f[f"mask/{name}"] = np.array(names, dtype="S")
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(ENV_ARGS, indent=4)


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    demos = {name: make_demo(int(name[5:]), t) for name, t in DEMOS.items()}
    write_robomimic(tmp_path / "lift.hdf5", demos, masks={"train": ["demo_10", "demo_0"], "valid": ["demo_2"]})
    return tmp_path / "lift.hdf5", demos


def test_reads_demos_in_number_order_bit_for_bit(dataset):
    """demo_0, demo_2, demo_10 (robomimic's argsort of the integers); every column as written; next_obs not read."""
    path, demos = dataset
    source = open_robomimic(path)
    assert len(source) == 3 and source.format == "robomimic"
    keys = source.keys()
    assert keys["agentview_image"] == (np.uint8, (SIZE, SIZE, 3)) and keys["actions"] == (np.float64, (7,))
    assert keys["rewards"] == (np.float64, ()) and "next_obs" not in keys
    for i, name in enumerate(["demo_0", "demo_2", "demo_10"]):
        ep = source.episode(i)
        want = {**demos[name]["obs"], **{k: demos[name][k] for k in ("actions", "states", "rewards", "dones")}}
        assert set(ep.data) == set(want)
        for k, v in want.items():
            assert ep.data[k].dtype == v.dtype, k
            np.testing.assert_array_equal(ep.data[k], v, err_msg=k)
        assert ep.task == f"lift the cube ({name})"
        assert ep.info == {"demo": name, "ep_meta": {"lang": f"lift the cube ({name})", "seed": int(name[5:])},
                           "num_samples": DEMOS[name]}
    assert set(source.episode(-1, keys=["actions"]).data) == {"actions"}


def test_default_map_and_its_fallback(dataset, tmp_path):
    """robot0 eef pos + quat + gripper qpos; without them every float vector obs key but object; cameras by name."""
    keymap = open_robomimic(dataset[0]).default_map()
    assert keymap.proprio == ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
    assert keymap.action == "actions"
    assert keymap.cameras == {"agentview": "agentview_image", "robot0_eye_in_hand": "robot0_eye_in_hand_image"}
    write_robomimic(tmp_path / "bare.hdf5", {"demo_1": make_demo(1, 3, proprio=False)})
    assert open_robomimic(tmp_path / "bare.hdf5").default_map().proprio == ["robot0_joint_pos"]


def test_filter_key_selects_its_demos(dataset):
    path, demos = dataset
    source = open_robomimic(path, filter_key="train")
    assert len(source) == 2 and [source.episode(i).info["demo"] for i in range(2)] == ["demo_0", "demo_10"]
    np.testing.assert_array_equal(source.episode(1).data["actions"], demos["demo_10"]["actions"])
    with pytest.raises(ValueError, match=r"no filter key 'test'; its filter keys \(mask/\): \['train', 'valid'\]"):
        open_robomimic(path, filter_key="test")


def test_describe_is_json_with_env_args_and_no_model_file(dataset):
    path, _ = dataset
    info = open_robomimic(path, filter_key="valid").describe()
    assert json.loads(json.dumps(info)) == info
    assert info["env_args"] == ENV_ARGS and info["fps"] == 20.0 and info["total"] == sum(DEMOS.values())
    assert info["filter_key"] == "valid" and info["filter_keys"] == {"train": 2, "valid": 1}
    assert (info["episodes"], info["steps"]) == (1, 3) and info["skipped"] == []
    assert info["demo_attrs"]["demo_2"]["num_samples"] == 3
    assert info["columns"]["agentview_image"] == {"dtype": "|u1", "shape": [SIZE, SIZE, 3],
                                                  "source": "obs/agentview_image"}
    assert "model_file" not in json.dumps(info)


def test_demo_without_actions_is_refused(dataset):
    path, _ = dataset
    with h5py.File(path, "a") as f:
        del f["data/demo_2/actions"]
    with pytest.raises(ValueError, match=rf"{path}: data/demo_2 has no actions dataset"):
        open_robomimic(path)


def test_num_samples_that_is_not_the_actions_length_is_refused(dataset):
    path, _ = dataset
    with h5py.File(path, "a") as f:
        f["data/demo_10"].attrs["num_samples"] = 9
    with pytest.raises(ValueError, match=r"data/demo_10: attr num_samples = 9 but actions has 4 steps"):
        open_robomimic(path)


def test_obs_of_another_length_or_missing_in_a_demo_is_refused(dataset):
    path, _ = dataset
    with h5py.File(path, "a") as f:
        del f["data/demo_2/obs/object"]
        f["data/demo_2/obs/object"] = np.zeros((2, 10))
    with pytest.raises(ValueError, match=r"data/demo_2: obs/object has shape \(2, 10\) but actions has 3 steps"):
        open_robomimic(path)
    with h5py.File(path, "a") as f:
        del f["data/demo_2/obs/object"]
    with pytest.raises(ValueError, match=r"data/demo_2 column object is missing, but data/demo_0 has"):
        open_robomimic(path)


def test_dummy_states_are_skipped_and_a_stale_total_warns(dataset):
    """Outside robosuite ``states`` may be empty (robomimic's docs): skipped; a wrong data attr total only warns."""
    path, _ = dataset
    with h5py.File(path, "a") as f:
        del f["data/demo_10/states"]
        f["data/demo_10/states"] = np.zeros((0,))
        f["data"].attrs["total"] = 99
    with pytest.warns(UserWarning, match=r"data attr total = 99 but its demos hold 12 steps"):
        source = open_robomimic(path)
    assert "states" not in source.keys() and source.describe()["skipped"] == ["states (missing or of another shape "
                                                                              "or length in data/demo_10)"]


def test_not_a_robomimic_file_is_refused(tmp_path):
    (tmp_path / "x.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"x.hdf5 is not an hdf5 file"):
        open_robomimic(tmp_path / "x.hdf5")
    with h5py.File(tmp_path / "y.hdf5", "w") as f:
        f.create_group("data/trajectory_1")
    with pytest.raises(ValueError, match=r"groups \['trajectory_1'\] not named demo_<k>"):
        open_robomimic(tmp_path / "y.hdf5")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_robomimic(tmp_path / "missing.hdf5")


def test_imports_into_a_store(dataset, tmp_path):
    """Through ``import_source`` with the default map: proprio = eef pos + quat + gripper as float32, frames as is."""
    importer = pytest.importorskip("s2robot.data.importer")
    path, demos = dataset
    store = importer.import_source(open_robomimic(path), tmp_path / "lift.zarr", image_size=SIZE, progress=False)
    assert store.n_episodes == 3 and store.attrs["control_hz"] == 20.0
    ep = store.get_episode(2)  # demo_10
    obs = demos["demo_10"]["obs"]
    want = np.concatenate([obs["robot0_eef_pos"], obs["robot0_eef_quat"], obs["robot0_gripper_qpos"]], axis=1)
    np.testing.assert_array_equal(ep["proprio"], want.astype(np.float32))
    np.testing.assert_array_equal(ep["action"], demos["demo_10"]["actions"].astype(np.float32))
    np.testing.assert_array_equal(ep["rgb_agentview"], obs["agentview_image"])
    assert store.episode_info(2)["task"] == "lift the cube (demo_10)"
