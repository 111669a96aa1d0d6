"""Tests for s2robot.data.store: EpisodeStore round trip, validation, crash safety, fingerprint, CLI."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import zarr

from s2robot.data.store import SCHEMA_VERSION, EpisodeStore
from s2robot.data.verify import verify_path
from s2robot.workflows.store import main

REPO = Path(__file__).resolve().parents[2]
LENGTHS = (1, 4, 7, 2, 5, 3)


def make_episode(i: int, length: int, size: int = 8) -> dict[str, np.ndarray]:
    """Deterministic synthetic episode i: rgb + proprio + action + two extra keys."""
    rng = np.random.default_rng(i)
    return {
        "rgb_front": rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(length, 8)).astype(np.float32),
        "action": rng.normal(size=(length, 8)).astype(np.float32),
        "feat_front": rng.normal(size=(length, 6)).astype(np.float16),
        "grasped": rng.random(length) > 0.5,
    }


def assert_episode_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def build(path: Path, lengths=LENGTHS, **attrs) -> tuple[EpisodeStore, list[dict[str, np.ndarray]]]:
    store = EpisodeStore.create(path, attrs=attrs or {"env_id": "CubePick-v0", "cameras": ["front"]})
    episodes = [make_episode(i, n) for i, n in enumerate(lengths)]
    for i, ep in enumerate(episodes):
        store.add_episode(ep, info={"seed": i, "cube_pos": [0.1 * i, 0.0], "success": i % 3 != 0})
    return store, episodes


def test_round_trip(tmp_path):
    """Episodes of different lengths come back bit for bit, with attrs, infos and layout, after reopen."""
    path = tmp_path / "demos.zarr"
    store, episodes = build(path)
    assert store.keys == ("action", "feat_front", "grasped", "proprio", "rgb_front")
    store = EpisodeStore.open(path)
    assert len(store) == store.n_episodes == len(LENGTHS)
    assert store.n_steps == sum(LENGTHS)
    np.testing.assert_array_equal(store.episode_lengths, LENGTHS)
    np.testing.assert_array_equal(store.episode_ends, np.cumsum(LENGTHS))
    assert store.episode_ends.dtype == np.int64
    for i, ep in enumerate(episodes):
        assert_episode_equal(store.get_episode(i), ep)
        assert store.episode_info(i) == {"seed": i, "cube_pos": [0.1 * i, 0.0], "success": i % 3 != 0,
                                         "length": LENGTHS[i]}
    for got, want in zip(store, episodes, strict=True):
        assert_episode_equal(got, want)
    assert_episode_equal(store.get_episode(-1), episodes[-1])
    np.testing.assert_array_equal(store.get_steps("action", 1, 12),
                                  np.concatenate([e["action"] for e in episodes])[1:12])
    assert dict(store.attrs) == {"env_id": "CubePick-v0", "cameras": ["front"]}
    with pytest.raises(TypeError):
        store.attrs["env_id"] = "other"  # read-only view
    assert set(store.software) == {"python", "numpy", "zarr", "s2robot"}
    # Diffusion Policy layout, readable with plain zarr
    root = zarr.open_group(path, mode="r")
    assert root.attrs["schema_version"] == SCHEMA_VERSION
    np.testing.assert_array_equal(root["meta/episode_ends"][:], np.cumsum(LENGTHS))
    rgb = root["data/rgb_front"]
    assert rgb.shape == (sum(LENGTHS), 8, 8, 3) and rgb.chunks == (1, 8, 8, 3)
    assert type(rgb.compressors[0]).__name__ == "BloscCodec" and rgb.compressors[0].cname.value == "zstd"
    with pytest.raises(IndexError):
        store.get_episode(len(LENGTHS))
    with pytest.raises(IndexError):
        store.get_steps("action", 0, sum(LENGTHS) + 1)
    with pytest.raises(KeyError, match="rgb_front"):
        store.get_steps("rgb_back", 0, 1)


def test_add_episode_validation_leaves_store_unchanged(tmp_path):
    """Mismatched keys, dtypes, shapes, lengths and NaNs raise ValueError naming the key; nothing changes."""
    path = tmp_path / "s.zarr"
    store, _ = build(path, lengths=(3, 2))
    before = (store.fingerprint, store.n_steps, store.episode_ends.tolist())
    good = make_episode(10, 4)
    bad_cases = {
        "missing": ({k: v for k, v in good.items() if k != "proprio"}, "missing \\['proprio'\\]"),
        "extra": ({**good, "reward": np.zeros(4, np.float32)}, "unexpected \\['reward'\\]"),
        "dtype": ({**good, "action": good["action"].astype(np.float64)}, "action: expected dtype float32"),
        "shape": ({**good, "rgb_front": np.zeros((4, 9, 8, 3), np.uint8)}, "rgb_front: .*\\(8, 8, 3\\)"),
        "length": ({**good, "proprio": good["proprio"][:3]}, "same length"),
        "empty": ({k: v[:0] for k, v in good.items()}, "T >= 1"),
    }
    nan_action = good["action"].copy()
    nan_action[2, 5] = np.nan
    bad_cases["nan"] = ({**good, "action": nan_action}, "action: non-finite .* step 2")
    for name, (data, match) in bad_cases.items():
        with pytest.raises(ValueError, match=match):
            store.add_episode(data)
        assert (store.fingerprint, store.n_steps, store.episode_ends.tolist()) == before, name
    with pytest.raises(ValueError, match="JSON"):
        store.add_episode(good, info={"seed": object()})
    with pytest.raises(ValueError, match="length"):
        store.add_episode(good, info={"length": 5})
    reopened = EpisodeStore.open(path)
    assert (reopened.fingerprint, reopened.n_steps) == before[:2]
    assert zarr.open_group(path, mode="r")["data/action"].shape == (5, 8)
    store.add_episode(good)  # still appendable
    assert store.n_episodes == 3


def test_first_episode_validation(tmp_path):
    """The first episode defines keys; NaNs and unsupported dtypes are rejected before anything is written."""
    store = EpisodeStore.create(tmp_path / "s.zarr")
    assert store.keys == () and store.n_steps == 0
    ep = make_episode(0, 3)
    ep["proprio"][1, 0] = np.inf
    with pytest.raises(ValueError, match=r"proprio: non-finite .* step 1"):
        store.add_episode(ep)
    with pytest.raises(ValueError, match="not storable"):
        store.add_episode({"name": np.array(["a", "b"])})
    assert store.keys == () and EpisodeStore.open(tmp_path / "s.zarr").keys == ()


def test_open_errors(tmp_path):
    """Missing path, non-store, wrong schema version and missing arrays fail with the path and a fix."""
    with pytest.raises(FileNotFoundError, match=r"nope.zarr.*EpisodeStore.create"):
        EpisodeStore.open(tmp_path / "nope.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*not an EpisodeStore"):
        EpisodeStore.open(tmp_path / "empty")
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(ValueError, match=r"plain.zarr.*not an EpisodeStore"):
        EpisodeStore.open(tmp_path / "plain.zarr")
    with pytest.raises(ValueError, match="mode"):
        EpisodeStore.open(tmp_path / "plain.zarr", mode="w")

    path = tmp_path / "s.zarr"
    build(path, lengths=(2,))
    zarr.open_group(path, mode="r+").update_attributes({"schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(ValueError, match=rf"schema version {SCHEMA_VERSION + 1}.* version {SCHEMA_VERSION}"):
        EpisodeStore.open(path)
    zarr.open_group(path, mode="r+").update_attributes({"schema_version": SCHEMA_VERSION})
    EpisodeStore.open(path)
    shutil.rmtree(path / "meta" / "episode_ends")
    with pytest.raises(ValueError, match="missing 'meta/episode_ends'"):
        EpisodeStore.open(path)


@pytest.mark.parametrize("ends", [[2, 5, 8], [2, 5, 10], [2, 5, 5], [2, 5, 4], [2, 6, 9], [2, 2, 9], [2, 5, 0, 9]])
@pytest.mark.parametrize("mode", ["r", "a"])
def test_damaged_episode_ends_delete_nothing(tmp_path, ends, mode):
    """episode_ends that no killed writer leaves (a last end short of, past or before its data, an end that disagrees
    with its episode's length) are refused as damage, naming the entry, and nothing is changed: taken for an interrupted
    append, they would make resume delete a good episode."""
    path = tmp_path / "s.zarr"
    build(path, lengths=(2, 3, 4))
    arr = zarr.open_group(path, mode="r+")["meta/episode_ends"]
    arr.resize((len(ends),))
    arr[:] = ends
    before = sorted((p.relative_to(path), p.read_bytes()) for p in path.rglob("*") if p.is_file())
    with pytest.raises(ValueError, match=r"meta/episode_ends\[\d\] = \d+ .*edited or damaged. Nothing was changed"):
        EpisodeStore.open(path, mode=mode)
    assert sorted((p.relative_to(path), p.read_bytes()) for p in path.rglob("*") if p.is_file()) == before


def test_ends_written_out_of_order_across_chunks_are_rolled_forward(tmp_path):
    """A commit of several episodes may write episode_ends' chunks in any order: a kill can leave a later end written
    and an earlier one 0. Both are completed from their infos, not refused."""
    path = tmp_path / "s.zarr"
    build(path, lengths=(2, 3, 4))
    zarr.open_group(path, mode="r+")["meta/episode_ends"][1] = 0  # [2, 0, 9]
    with pytest.warns(UserWarning, match="2 episode.*complete"):
        assert EpisodeStore.open(path, mode="a").episode_ends.tolist() == [2, 5, 9]
    assert zarr.open_group(path, mode="r")["meta/episode_ends"][:].tolist() == [2, 5, 9]


def test_zeroed_last_end_is_restored_from_its_info(tmp_path):
    """A last end read as 0 (the fill value an interrupted commit leaves) with a complete episode behind it (data
    matching its info's digest) is restored, not dropped; the data lost one step is refused as damage instead."""
    path = tmp_path / "s.zarr"
    build(path, lengths=(2, 3, 4))
    zarr.open_group(path, mode="r+")["meta/episode_ends"][2] = 0
    with pytest.warns(UserWarning, match="1 episode.*complete"):
        assert EpisodeStore.open(path, mode="a").n_episodes == 3
    assert zarr.open_group(path, mode="r")["meta/episode_ends"][:].tolist() == [2, 5, 9]
    zarr.open_group(path, mode="r+")["meta/episode_ends"][2] = 0
    zarr.open_group(path, mode="r+")["data/action"][8, 0] += 1
    with pytest.raises(ValueError, match=r"episode info entry 2 .* do not match its digest"):
        EpisodeStore.open(path, mode="a")


def test_create_existing_and_read_only(tmp_path):
    """create refuses an existing path unless overwrite=True; a read-only store refuses writes."""
    path = tmp_path / "s.zarr"
    build(path, lengths=(2, 3))
    with pytest.raises(FileExistsError, match=r"mode='a'.*overwrite=True"):
        EpisodeStore.create(path)
    assert EpisodeStore.open(path).n_episodes == 2  # untouched
    store = EpisodeStore.open(path)
    with pytest.raises(PermissionError, match=r"read-only.*mode='a'"):
        store.add_episode(make_episode(5, 2))
    with pytest.raises(PermissionError, match="read-only"):
        store.update_attrs({"x": 1})
    assert EpisodeStore.open(path).n_episodes == 2
    assert EpisodeStore.create(path, overwrite=True).n_episodes == 0


def test_fingerprint_and_update_attrs(tmp_path):
    """The fingerprint changes with content, is stable across reopen, and ignores user attrs."""
    path = tmp_path / "s.zarr"
    store, _ = build(path, lengths=(2, 3))
    fp2 = store.fingerprint
    assert len(fp2) == 64 and int(fp2, 16) >= 0
    assert EpisodeStore.open(path).fingerprint == fp2
    store = EpisodeStore.open(path, mode="a")
    store.update_attrs({"control_hz": 10, "env_id": "CubePick-v1"})
    assert dict(EpisodeStore.open(path).attrs) == {"env_id": "CubePick-v1", "cameras": ["front"],
                                                   "control_hz": 10}
    assert store.fingerprint == fp2
    store.add_episode(make_episode(2, 4))
    fp3 = store.fingerprint
    assert fp3 != fp2 and EpisodeStore.open(path).fingerprint == fp3
    # same shapes, one pixel different -> different fingerprint
    other, _ = build(tmp_path / "o.zarr", lengths=(2, 3))
    assert other.fingerprint == fp2
    tweaked = make_episode(2, 4)
    tweaked["rgb_front"][3, 0, 0, 0] ^= 1
    other.add_episode(tweaked)
    assert other.fingerprint != fp3
    # an info list shorter than episode_ends (episode_ends is the truth): digest rebuilt from the data for reading;
    # appending is refused, since it would sign the edit (and lose the dropped info for good)
    root = zarr.open_group(path, mode="r+")
    root.update_attributes({"episodes": root.attrs["episodes"][:-1]})
    assert EpisodeStore.open(path).fingerprint == fp3
    assert EpisodeStore.open(path).episode_info(2) == {"length": 4}
    with pytest.raises(ValueError, match=r"edited around the EpisodeStore API.*nothing was changed"):
        EpisodeStore.open(path, mode="a")
    assert len(zarr.open_group(path, mode="r").attrs["episodes"]) == 2


CRASH_SCRIPT = """
import os, signal, sys
import zarr
from s2robot.data.store import EpisodeStore
sys.path.insert(0, {tests!r})
from test_store import make_episode, LENGTHS

path, where, kill_ep = sys.argv[1], sys.argv[2], int(sys.argv[3])

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if where == "mid_data":  # after the first data key of the episode is resized and written
    write_key = EpisodeStore._write_key
    def patched(self, key, start, value):
        write_key(self, key, start, value)
        if self.n_episodes == kill_ep:
            die()
    EpisodeStore._write_key = patched
elif where == "before_commit":  # all data written, no info, no episode_ends
    commit = EpisodeStore._commit
    def patched(self, entries, attrs):
        if self.n_episodes == kill_ep:
            die()
        commit(self, entries, attrs)
    EpisodeStore._commit = patched
elif where == "after_info":  # info entry written, episode_ends not
    update = zarr.Group.update_attributes
    def patched(self, new):
        update(self, new)
        if len(new.get("episodes", ())) == kill_ep + 1:
            die()
    zarr.Group.update_attributes = patched
elif where == "ends_resized":  # episode_ends resized (fill value visible), its value not yet written
    resize = zarr.Array.resize
    def patched(self, shape):
        resize(self, shape)
        if self.path == "meta/episode_ends" and shape[0] == kill_ep + 1:
            die()
    zarr.Array.resize = patched

store = EpisodeStore.create(path, attrs={{"env_id": "CubePick-v0"}})
for i, n in enumerate(LENGTHS):
    store.add_episode(make_episode(i, n), info={{"seed": i}})
"""


@pytest.mark.parametrize("where,kill_ep", [("mid_data", 3), ("before_commit", 3), ("after_info", 3),
                                           ("ends_resized", 3), ("mid_data", 0), ("after_info", 0)])
def test_sigkill_mid_episode_then_resume(tmp_path, where, kill_ep):
    """A writer SIGKILLed inside an episode leaves earlier episodes intact. Killed before the info write, the
    episode's partial steps are dropped (no info entry: provably torn); killed after it (info written, episode_ends
    not), the episode is complete and is kept. Appending the rest in mode "a" gives the same store as an
    uninterrupted run (recovery never deletes a complete episode)."""
    script = tmp_path / "record.py"
    script.write_text(textwrap.dedent(CRASH_SCRIPT.format(tests=str(Path(__file__).parent))))
    path = tmp_path / "crash.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), str(path), where, str(kill_ep)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert zarr.open_group(path, mode="r")["data/action"].shape[0] > sum(LENGTHS[:kill_ep])  # partial data

    complete = where in ("after_info", "ends_resized")
    kept = kill_ep + complete
    expect = "1 episode.* complete .* kept" if complete else f"{LENGTHS[kill_ep]} trailing steps .* torn data write"
    with pytest.warns(UserWarning, match=f"found .*{expect}"):
        store = EpisodeStore.open(path)
    assert store.n_episodes == kept and store.n_steps == sum(LENGTHS[:kept])
    for i in range(kept):
        assert_episode_equal(store.get_episode(i), make_episode(i, LENGTHS[i]))
        assert store.episode_info(i) == {"seed": i, "length": LENGTHS[i]}

    with pytest.warns(UserWarning, match="repaired"):
        store = EpisodeStore.open(path, mode="a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EpisodeStore.open(path)  # repaired: no warning any more
    for i in range(kept, len(LENGTHS)):
        store.add_episode(make_episode(i, LENGTHS[i]), info={"seed": i})

    reference = EpisodeStore.create(tmp_path / "ref.zarr")
    for i, n in enumerate(LENGTHS):
        reference.add_episode(make_episode(i, n), info={"seed": i})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = EpisodeStore.open(path)
    assert store.fingerprint == reference.fingerprint
    for i, n in enumerate(LENGTHS):
        assert_episode_equal(store.get_episode(i), make_episode(i, n))
        assert store.episode_info(i) == {"seed": i, "length": n}
    assert dict(store.attrs) == {"env_id": "CubePick-v0"}


def test_cli_info_and_video(tmp_path, capsys):
    """`info` prints the summary; `video` writes one mp4 per episode with one frame per step."""
    path = tmp_path / "demos.zarr"
    store = EpisodeStore.create(path, attrs={"env_id": "CubePick-v0"})
    yy, xx = np.mgrid[0:32, 0:32]
    for i, n in enumerate((3, 6)):
        frames = np.stack([np.stack([xx * 8, yy * 8, np.full_like(xx, 40 * t)], -1) for t in range(n)])
        store.add_episode({"rgb_front": frames.astype(np.uint8), "action": np.zeros((n, 8), np.float32)},
                          info={"success": i == 1})
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "episodes     2" in out and "steps        9" in out and "success      50.0%" in out
    assert "rgb_front" in out and store.fingerprint in out and "CubePick-v0" in out

    out_dir = tmp_path / "videos"
    assert main(["video", str(path), "--episodes", "1", "0", "--camera", "front", "--out", str(out_dir)]) == 0
    for i, n in ((0, 3), (1, 6)):
        video = out_dir / f"demos_ep{i}_front.mp4"
        with imageio.get_reader(video) as reader:
            frames = list(reader.iter_data())
        assert len(frames) == n and frames[0].shape == (32, 32, 3)

    assert main(["video", str(path), "--camera", "wrist", "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert "no camera 'wrist'" in err and "available: ['front']" in err
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2


def test_add_episodes_equals_one_by_one(tmp_path):
    """A bulk append stores exactly what appending the same episodes one at a time stores."""
    episodes = [(make_episode(i, n), {"seed": i}) for i, n in enumerate(LENGTHS)]
    bulk = EpisodeStore.create(tmp_path / "bulk.zarr")
    bulk.add_episodes(episodes[:2])
    bulk.add_episodes(episodes[2:])
    single = EpisodeStore.create(tmp_path / "single.zarr")
    for data, info in episodes:
        single.add_episode(data, info)
    reopened = EpisodeStore.open(tmp_path / "bulk.zarr")
    assert reopened.fingerprint == single.fingerprint
    np.testing.assert_array_equal(reopened.episode_ends, single.episode_ends)
    for i in range(len(LENGTHS)):
        assert reopened.episode_info(i) == single.episode_info(i)
        for k, v in single.get_episode(i).items():
            np.testing.assert_array_equal(reopened.get_episode(i)[k], v)
    bad = make_episode(9, 3)
    bad["action"] = bad["action"].astype(np.float64)
    with pytest.raises(ValueError, match="action"):
        bulk.add_episodes([(make_episode(8, 2), None), (bad, None)])
    assert bulk.n_episodes == len(LENGTHS)  # a rejected batch writes nothing


# ---------------------------------------------------------------------- schema 2: signed attrs, upgrade, damage
def rewrite_root_attrs(path: Path, **changes: object) -> None:
    """Edit the root zarr.json by hand, around the EpisodeStore API (a value of None deletes the attr)."""
    meta = json.loads((path / "zarr.json").read_text())
    for k, v in changes.items():
        if v is None:
            meta["attributes"].pop(k, None)
        else:
            meta["attributes"][k] = v
    (path / "zarr.json").write_text(json.dumps(meta, indent=2))


def make_schema_1(path: Path, checksum: bool = True) -> None:
    """Rewrite a store as s2robot wrote schema version 1: no per-key digests, the checksum (optional then) over the
    user attrs and episode infos only."""
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    episodes = [{k: v for k, v in e.items() if k != "key_digests"} for e in attrs["episodes"]]
    doc = json.dumps({"user": attrs["user"], "episodes": episodes}, sort_keys=True)
    rewrite_root_attrs(path, schema_version=1, episodes=episodes,
                       checksum=hashlib.sha256(doc.encode()).hexdigest() if checksum else None)


def snapshot(path: Path) -> list[tuple[Path, bytes]]:
    return sorted((p.relative_to(path), p.read_bytes()) for p in path.rglob("*") if p.is_file())


def test_missing_checksum_is_an_integrity_problem(tmp_path):
    """Attrs edited with their checksum removed (here the recorder's noise_std, so that a resume with other settings
    would match) are reported by verify and refused for appending, exactly like a checksum that does not match."""
    path = tmp_path / "s.zarr"
    build(path, lengths=(2, 3), noise_std=0.0)
    rewrite_root_attrs(path, user={"noise_std": 0.05}, checksum=None)
    before = snapshot(path)
    assert EpisodeStore.open(path).integrity == [
        "attrs: the attrs checksum is missing: the attrs were edited around the EpisodeStore API (every store of "
        "schema version 2 is signed)"]
    with pytest.raises(ValueError, match=r"checksum is missing.*nothing was changed"):
        EpisodeStore.open(path, mode="a")
    assert verify_path(path) == EpisodeStore.open(path).integrity
    assert main(["verify", str(path)]) == 1
    assert snapshot(path) == before


def test_schema_1_store_is_refused_with_the_upgrade_command(tmp_path, capsys):
    """A schema-1 store is refused at open, naming the one-time upgrade; ``store upgrade`` re-reads every episode,
    signs the attrs and per-key digests in one write and leaves the fingerprint (feature caches' key) unchanged."""
    path = tmp_path / "s.zarr"
    store, episodes = build(path, lengths=(2, 3, 4))
    fingerprint = store.fingerprint
    make_schema_1(path)
    for mode in ("r", "a"):
        with pytest.raises(ValueError, match=rf"schema version 1.*python -m s2robot.workflows.store upgrade {path}"):
            EpisodeStore.open(path, mode=mode)
    assert main(["verify", str(path)]) == 1 and "store upgrade" in capsys.readouterr().out

    assert main(["upgrade", str(path)]) == 0
    out = capsys.readouterr().out
    assert "schema version 1 → 2" in out and "3 episodes (9 steps) match their digests" in out
    assert "rgb_front" in out and "env_id" in out
    store = EpisodeStore.open(path, mode="a")
    assert store.fingerprint == fingerprint and store.integrity == []
    attrs = zarr.open_group(path, mode="r").attrs
    assert attrs["schema_version"] == SCHEMA_VERSION == 2
    assert all(set(e["key_digests"]) == set(episodes[0]) for e in attrs["episodes"])
    assert main(["verify", str(path)]) == 0
    assert main(["upgrade", str(path)]) == 0 and "already schema version 2" in capsys.readouterr().out


def test_upgrade_of_unsigned_schema_1_store_says_so(tmp_path, capsys):
    """Schema 1 stores written before the checksum existed are signed as found, and the upgrade says so."""
    path = tmp_path / "s.zarr"
    build(path, lengths=(2,))
    make_schema_1(path, checksum=False)
    assert main(["upgrade", str(path)]) == 0
    assert "had no checksum" in capsys.readouterr().out
    assert EpisodeStore.open(path, mode="a").integrity == []


def test_upgrade_repairs_an_interrupted_append_as_a_writer_would(tmp_path, capsys):
    """Torn steps past the last episode of a schema-1 store (a killed writer) are dropped by the upgrade, which says
    so; the committed episodes are signed."""
    path = tmp_path / "s.zarr"
    build(path, lengths=(2, 3))
    action = zarr.open_group(path, mode="r+")["data/action"]
    action.resize((7, 8))
    make_schema_1(path)
    assert main(["upgrade", str(path)]) == 0
    assert "repaired an interrupted append: 2 trailing steps" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert EpisodeStore.open(path).n_steps == 5
    assert main(["verify", str(path)]) == 0


@pytest.mark.parametrize("damage", ["data", "checksum", "ends"])
def test_upgrade_refuses_a_damaged_store_and_changes_nothing(tmp_path, capsys, damage):
    """An episode that no longer matches its digest, attrs that no longer match their checksum, or damaged
    episode_ends: the upgrade lists the problems, exits 1 and changes nothing."""
    path = tmp_path / "s.zarr"
    build(path, lengths=(2, 3, 4))
    if damage == "data":
        zarr.open_group(path, mode="r+")["data/action"][3, 0] += 1
    make_schema_1(path)
    if damage == "checksum":
        rewrite_root_attrs(path, user={"env_id": "Other-v0"})
    elif damage == "ends":
        (path / "meta" / "episode_ends" / "c" / "0").write_bytes(b"\0" * 5)
    before = snapshot(path)
    assert main(["upgrade", str(path)]) == 1
    out = capsys.readouterr().out
    expect = {"data": "episode 1: its arrays differ", "checksum": "attrs: .*edited around the EpisodeStore API",
              "ends": "meta/episode_ends chunk"}[damage]
    assert re.search(expect, out) and "nothing was changed" in out, out
    assert snapshot(path) == before


def test_fingerprint_keeps_layout_version_1(tmp_path):
    """The schema bump to 2 changed only the attrs, not the data layout: the fingerprint still hashes layout version 1,
    so feature caches keyed by their demo store's fingerprint stay valid."""
    store, _ = build(tmp_path / "s.zarr", lengths=(2, 3))
    attrs = zarr.open_group(store.path, mode="r").attrs
    doc = {"schema_version": 1, "keys": [[k, store.spec(k)[0].str, list(store.spec(k)[1])] for k in store.keys],
           "episode_ends": [2, 5], "digests": [e["digest"] for e in attrs["episodes"]]}
    assert store.fingerprint == hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def damage_file(path: Path, what: str) -> str:
    """One damaged metadata file of the store at ``path``; the name the error must give."""
    if what == "root_truncated":
        f = path / "zarr.json"
        f.write_bytes(f.read_bytes()[:100])
        return "root zarr.json"
    if what == "root_key_flip":  # one bit: 'attributes' -> 'attricutes'
        f = path / "zarr.json"
        f.write_bytes(f.read_bytes().replace(b'"attributes"', b'"attricutes"'))
        return "root zarr.json"
    if what == "ends_chunk":
        f = path / "meta" / "episode_ends" / "c" / "0"
        f.write_bytes(f.read_bytes()[:6])
        return "meta/episode_ends chunk"
    if what == "ends_meta":
        (path / "meta" / "episode_ends" / "zarr.json").write_text('{"zarr_format": 3, "node_')
        return "meta/episode_ends/zarr.json"
    (path / "data" / "action" / "zarr.json").write_text("{")
    return "data/action/zarr.json"


@pytest.mark.parametrize("what", ["root_truncated", "root_key_flip", "ends_chunk", "ends_meta", "data_meta"])
def test_damaged_metadata_is_reported_not_raised(tmp_path, capsys, what):
    """Unreadable root metadata, episode_ends or a key's metadata: open raises a ValueError naming the file and
    the fix, verify reports it (CLI exit 1), and nothing is changed."""
    path = tmp_path / "s.zarr"
    build(path, lengths=(2, 3))
    name = damage_file(path, what)
    before = snapshot(path)
    for mode in ("r", "a"):
        with pytest.raises(ValueError, match=rf"{name} .*damaged.*Nothing was changed.*store verify"):
            EpisodeStore.open(path, mode=mode)
    problems = verify_path(path)
    assert len(problems) == 1 and name in problems[0], problems
    assert main(["verify", str(path)]) == 1 and name in capsys.readouterr().out
    assert snapshot(path) == before


def test_merge_keeps_every_episode_in_order_and_refuses_other_setups(tmp_path, capsys):
    """`merge` writes the sources' episodes in order, bit for bit, with where each came from; stores of another
    recording setup or other arrays are refused before anything is written, and so is an existing output."""
    setup = {"cameras": ["front"], "image_size": 8, "control_hz": 10, "env": {"id": "CubePick-v0", "options": {}},
             "attempts": [{"seed": 0}]}
    _, eps_a = build(tmp_path / "a.zarr", (3, 2), **setup)
    b = EpisodeStore.create(tmp_path / "b.zarr", attrs=setup | {"env": {"id": "CubePick-v0",
                                                                        "options": {"scene_index": 1}}})
    eps_b = [make_episode(10 + i, n) for i, n in enumerate((4, 1, 2))]
    for i, ep in enumerate(eps_b):
        b.add_episode(ep, info={"seed": i})
    out = tmp_path / "ab.zarr"
    assert main(["merge", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), "--out", str(out)]) == 0
    assert "5 episodes, 12 steps from 2 stores" in capsys.readouterr().out
    merged = EpisodeStore.open(out)
    for i, want in enumerate(eps_a + eps_b):
        assert_episode_equal(merged.get_episode(i), want)
        assert merged.episode_info(i)["merged_from_store"] == (0 if i < 2 else 1)
    assert merged.episode_info(2)["seed"] == 0 and "attempts" not in merged.attrs
    assert [m["n_episodes"] for m in merged.attrs["merged_from"]] == [2, 3]
    assert merged.attrs["merged_from"][1]["fingerprint"] == b.fingerprint
    assert verify_path(out) == []

    build(tmp_path / "hz.zarr", (2,), **setup | {"control_hz": 20})
    other = EpisodeStore.create(tmp_path / "keys.zarr", attrs=setup)
    other.add_episode({k: v for k, v in make_episode(0, 2).items() if k != "grasped"})
    for bad, match in (("hz.zarr", "control_hz: 20 vs 10"), ("keys.zarr", "other arrays")):
        target = tmp_path / f"out-{bad}"
        assert main(["merge", str(tmp_path / "a.zarr"), str(tmp_path / bad), "--out", str(target)]) == 2
        assert match in capsys.readouterr().err and not target.exists()
    assert main(["merge", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and EpisodeStore.open(out).n_episodes == 5
