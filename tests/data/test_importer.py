"""Importing an EpisodeSource into an EpisodeStore (s2robot.data.importer): key maps, frame crop/resize, provenance,
refusals, resume, and the ``store import`` command."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from s2robot.common.lock import writer_lock
from s2robot.data import importer
from s2robot.data.importer import import_source, key_map_for, key_map_with, sim_env_problem
from s2robot.data.sources import KeyMap, SourceEpisode
from s2robot.data.store import EpisodeStore
from s2robot.workflows import store as store_cli
from s2robot.workflows.store import main

LENGTHS = (4, 6, 3, 5)


class ListSource:
    """An in-memory EpisodeSource: episode i is ``episodes[i]``; ``reads`` lists the episodes read."""

    format = "list"

    def __init__(self, path: Path, episodes: list[dict[str, np.ndarray]], fps: float | None = 10.0) -> None:
        self.path, self.episodes, self.fps, self.reads = path, episodes, fps, []

    def __len__(self) -> int:
        return len(self.episodes)

    def keys(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        return {k: (v.dtype, v.shape[1:]) for k, v in self.episodes[0].items()}

    def episode(self, i: int, keys: Sequence[str] | None = None) -> SourceEpisode:
        self.reads.append(i)
        data = {k: v for k, v in self.episodes[i].items() if keys is None or k in keys}
        return SourceEpisode(data, task=f"stack {i % 2}", info={"demo": f"demo_{i}"})

    def default_map(self) -> KeyMap:
        return KeyMap(proprio=["joints", "gripper"], action="act", cameras={"front": "cam"})

    def describe(self) -> dict[str, Any]:
        return {"format": self.format, "path": str(self.path), "fps": self.fps, "episodes": len(self)}


def make_source(path: Path, frames: tuple[int, ...] = (24, 40, 3), dtype: str = "uint8",
                lengths: tuple[int, ...] = LENGTHS) -> ListSource:
    """Episodes of joints (T, 7) float64, gripper (T,) float32, act (T, 8) float32 and cam frames ``frames``."""
    rng = np.random.default_rng(0)
    episodes = []
    for n in lengths:
        cam = rng.integers(0, 256, (n, *frames)).astype(dtype)
        episodes.append({"joints": rng.normal(size=(n, 7)), "gripper": rng.random(n).astype(np.float32),
                         "act": rng.normal(size=(n, 8)).astype(np.float32),
                         "cam": cam / 255.0 if dtype == "float32" else cam})
    return ListSource(path, episodes)


def reference_resize(frames: np.ndarray, top: int, left: int, side: int, size: int) -> np.ndarray:
    """Centre crop then torch's bilinear antialiased resize, rounded: (T, H, W, 3) uint8 → (T, S, S, 3) uint8."""
    x = torch.from_numpy(frames[:, top:top + side, left:left + side].copy()).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_import_crops_resizes_and_records_provenance(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    store = import_source(source, tmp_path / "demos.zarr", image_size=16, progress=False)
    assert store.keys == ("action", "proprio", "rgb_front", "target") and list(store.episode_lengths) == list(LENGTHS)
    ep = store.get_episode(1)
    want = source.episodes[1]
    np.testing.assert_array_equal(ep["proprio"], np.concatenate([want["joints"], want["gripper"][:, None]], 1)
                                  .astype(np.float32))
    np.testing.assert_array_equal(ep["action"], want["act"])
    np.testing.assert_array_equal(ep["target"], want["act"])  # absolute targets: what action_space=absolute reads
    np.testing.assert_array_equal(ep["rgb_front"], reference_resize(want["cam"], 0, 8, 24, 16))  # 24×40: crop x 8..32
    imported = store.attrs["imported"]
    assert imported["format"] == "list" and imported["path"] == str((tmp_path / "src").resolve())
    assert imported["key_map"] == {"proprio": ["joints", "gripper"], "action": "act", "cameras": {"front": "cam"}}
    transform = imported["transform"]["front"]
    assert transform["source_size"] == [24, 40] and transform["crop"] == [0, 8, 24, 24] and transform["size"] == 16
    assert "bilinear" in transform["method"] and transform["value_scale"] == 1.0
    assert (store.attrs["cameras"], store.attrs["image_size"], store.attrs["control_hz"]) == (["front"], 16, 10.0)
    assert imported["action_space"] == "absolute"
    assert store.episode_info(3) == {"source_episode": 3, "task": "stack 1", "source_info": {"demo": "demo_3"},
                                     "length": 5}
    assert len(store.fingerprint) == 64
    assert main(["verify", str(tmp_path / "demos.zarr")]) == 0


def test_square_frames_of_the_output_size_are_kept_bit_for_bit(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", frames=(16, 16, 3))
    store = import_source(source, tmp_path / "demos.zarr", image_size=16, action_space="delta", progress=False)
    np.testing.assert_array_equal(store.get_episode(2)["rgb_front"], source.episodes[2]["cam"])
    assert store.keys == ("action", "proprio", "rgb_front")  # deltas: no absolute target
    assert "no resize" in store.attrs["imported"]["transform"]["front"]["method"]


def test_float_and_channel_first_frames(tmp_path: Path) -> None:
    """Float frames in [0, 1], channels first, import as the uint8 frames they came from."""
    chw = make_source(tmp_path / "f", frames=(3, 16, 16), dtype="float32")  # uint8 values / 255
    store = import_source(chw, tmp_path / "b.zarr", image_size=16, progress=False)
    uint8 = (chw.episodes[0]["cam"] * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)  # (T, 16, 16, 3)
    np.testing.assert_array_equal(store.get_episode(0)["rgb_front"], uint8)
    transform = store.attrs["imported"]["transform"]["front"]
    assert (transform["layout"], transform["dtype"], transform["value_scale"]) == ("CHW", "float32", 255.0)
    with pytest.raises(ValueError, match=r"camera column 'cam' has per-step shape \[16, 16\]: expected RGB"):
        import_source(make_source(tmp_path / "g", frames=(16, 16)), tmp_path / "g.zarr", progress=False)
    with pytest.raises(ValueError, match="has dtype uint16: expected uint8 frames"):
        import_source(make_source(tmp_path / "h", dtype="uint16"), tmp_path / "h.zarr", progress=False)
    assert not (tmp_path / "g.zarr").exists() and not (tmp_path / "h.zarr").exists()


def test_a_missing_column_lists_the_available_ones(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    bad = KeyMap(proprio=["joints", "wrist"], action="act", cameras={})
    with pytest.raises(ValueError, match=r"has no column \['wrist'\]\. Available columns \(per-step dtype and shape\): "
                                         r"joints float64\[7\], gripper float32\[\], act float32\[8\], cam uint8\[24, "
                                         r"40, 3\]\. Choose with --proprio a,b --action k --camera name=column"):
        import_source(source, tmp_path / "demos.zarr", key_map=bad, progress=False)
    with pytest.raises(ValueError, match="gives no action column"):
        import_source(source, tmp_path / "demos.zarr", key_map=KeyMap(["joints"], "", {}), progress=False)
    assert not (tmp_path / "demos.zarr").exists()


def test_nan_is_refused_naming_episode_and_column_and_nothing_is_left(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "_COMMIT_EPISODES", 1)  # episodes 0 and 1 are committed before the refusal
    source = make_source(tmp_path / "src")
    source.episodes[2]["gripper"][1] = np.nan
    with pytest.raises(ValueError, match=r"source episode 2: column 'gripper' holds NaN/inf at step 1 \(1 steps\); "
                                         r"nothing was imported.* \(.*demos\.zarr was removed\)"):
        import_source(source, tmp_path / "demos.zarr", progress=False)
    assert not (tmp_path / "demos.zarr").exists()


def test_an_interrupted_import_resumes_with_only_the_missing_episodes(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    straight = import_source(make_source(tmp_path / "src"), tmp_path / "straight.zarr", progress=False)
    monkeypatch.setattr(importer, "_COMMIT_EPISODES", 1)
    source = make_source(tmp_path / "src")
    real = source.episode

    def killed_at_2(i: int, keys: Sequence[str] | None = None) -> SourceEpisode:
        if i == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(i, keys)

    monkeypatch.setattr(source, "episode", killed_at_2)
    with pytest.raises(KeyboardInterrupt):
        import_source(source, tmp_path / "demos.zarr", progress=False)
    assert EpisodeStore.open(tmp_path / "demos.zarr").n_episodes == 2
    source = make_source(tmp_path / "src")
    resumed = import_source(source, tmp_path / "demos.zarr", progress=False)
    assert source.reads == [2, 3] and resumed.fingerprint == straight.fingerprint
    again = make_source(tmp_path / "src")
    assert import_source(again, tmp_path / "demos.zarr", progress=False).n_episodes == 4 and again.reads == []


def test_an_existing_out_of_another_kind_or_source_is_never_overwritten(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", lengths=(2, 3))
    import_source(source, tmp_path / "demos.zarr", image_size=16, progress=False)
    with pytest.raises(ValueError, match=r"differs from this one: image_size \(16 → 24\)\. Nothing was changed"):
        import_source(source, tmp_path / "demos.zarr", image_size=24, progress=False)
    other = key_map_with(source.default_map(), proprio="joints")
    with pytest.raises(ValueError, match=r"differs from this one: key_map .*--overwrite to replace it"):
        import_source(source, tmp_path / "demos.zarr", key_map=other, image_size=16, progress=False)
    replaced = import_source(source, tmp_path / "demos.zarr", key_map=other, image_size=16, overwrite=True,
                             progress=False)
    assert replaced.spec("proprio")[1] == (7,)
    recorded = EpisodeStore.create(tmp_path / "recorded.zarr", attrs={"env": {"id": "CubePick-v0"}})
    recorded.add_episode({"proprio": np.zeros((2, 8), np.float32)})
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    for out, message in ((tmp_path / "recorded.zarr", "recorded by s2robot, not an import"),
                         (notes, "exists and is not an EpisodeStore")):
        for overwrite in (False, True):
            with pytest.raises(FileExistsError, match=message):
                import_source(source, out, overwrite=overwrite, progress=False)
    assert (notes / "keep.txt").read_text() == "mine" and EpisodeStore.open(tmp_path / "recorded.zarr").n_episodes == 1


def test_key_map_flags() -> None:
    base = KeyMap(proprio=["observation.state"], action="action", cameras={"front": "observation.images.front"})
    assert key_map_with(base) == base
    changed = key_map_with(base, proprio="a,b", action="act", cameras=["wrist=obs.wrist", "top=obs.top"])
    assert changed == KeyMap(["a", "b"], "act", {"wrist": "obs.wrist", "top": "obs.top"})
    assert key_map_with(base, cameras=["none"]).cameras == {}
    with pytest.raises(ValueError, match="--camera 'wrist': write name=column"):
        key_map_with(base, cameras=["wrist"])


def test_flags_stand_in_for_a_default_map_the_format_cannot_find(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(tmp_path / "src")

    def no_default() -> KeyMap:
        raise ValueError("no data/action array")

    monkeypatch.setattr(source, "default_map", no_default)
    assert key_map_for(source, "joints", "act", ["front=cam"]) == KeyMap(["joints"], "act", {"front": "cam"})
    with pytest.raises(ValueError, match="no data/action array"):
        key_map_for(source, proprio="joints")


def test_cli_import_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["import", str(tmp_path / "absent"), "--format", "lerobot", "--out", str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no LeRobot dataset at") and err.count("\n") == 1
    monkeypatch.setitem(importer.READERS, "robomimic", ("s2robot.data.no_such_module", "open_robomimic"))
    assert main(["import", str(tmp_path), "--format", "robomimic", "--out", str(tmp_path / "x.zarr")]) == 2
    assert "format 'robomimic' is not available in this s2robot" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["import", str(tmp_path), "--format", "hdf5", "--out", str(tmp_path / "x.zarr")])
    assert exit_info.value.code == 2 and not (tmp_path / "x.zarr").exists()


def test_evaluation_in_the_sim_is_refused_for_imported_demos(tmp_path: Path) -> None:
    store = import_source(make_source(tmp_path / "src", lengths=(2,)), tmp_path / "demos.zarr", progress=False)
    problem = sim_env_problem(store.attrs)
    assert problem is not None and "imported from the list dataset" in problem and "validation loss" in problem
    assert sim_env_problem({"kind": "s2robot.FeatureCache", "source": {"attrs": dict(store.attrs)}}) == problem
    assert sim_env_problem({"env": {"id": "CubePick-v0"}, "cameras": ["front"]}) is None


def test_cli_import_into_a_store_another_process_writes_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out, source = tmp_path / "x.zarr", make_source(tmp_path / "src", lengths=(2,))
    monkeypatch.setattr(store_cli, "open_source", lambda fmt, path: source)
    with writer_lock(out, "demo store"):
        assert main(["import", str(tmp_path / "src"), "--format", "lerobot", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is being written by another process" in err and err.count("\n") == 1 and not out.exists()
