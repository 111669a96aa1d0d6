"""verify_store: edited, deleted, truncated and bit-flipped chunks are found and named, nothing is deleted; the
feature cache refuses a store whose episodes no longer match their digests (hostile-testing finding 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import make_demos

from s2robot.data.features import build_feature_cache
from s2robot.data.store import EpisodeStore
from s2robot.data.verify import verify_store
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder
from s2robot.workflows.store import main as store_cli

LENGTHS = (5, 7, 4)  # episode 1 holds store steps 5..11


def chunk(store: Path, key: str, step: int) -> Path:
    """The file of the image chunk holding ``step`` (one frame per chunk)."""
    return store / "data" / key / "c" / str(step) / "0" / "0" / "0"


def corrupt(path: Path, how: str, rng: np.random.Generator) -> None:
    """One corruption of store step 7 (episode 1, step 2)."""
    f = chunk(path, "rgb_front", 7)
    if how == "edit":
        zarr.open_array(path / "data" / "rgb_front", mode="r+")[7, 0, 0] += np.uint8(1)
    elif how == "delete":
        f.unlink()
    elif how == "truncate":
        f.write_bytes(f.read_bytes()[:8])  # too short for blosc's header: decoding fails
    elif how == "bitflip":
        b = bytearray(f.read_bytes())
        b[int(rng.integers(16, len(b)))] ^= 1 << int(rng.integers(8))
        f.write_bytes(bytes(b))
    elif how == "action":
        zarr.open_array(path / "data" / "action", mode="r+")[7, 0] += 1.0


@pytest.mark.parametrize("how", ["edit", "delete", "truncate", "bitflip", "action"])
def test_each_corruption_is_found_and_named(tmp_path: Path, how: str) -> None:
    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    assert verify_store(EpisodeStore.open(demos)) == []
    corrupt(demos, how, np.random.default_rng(0))
    problems = verify_store(EpisodeStore.open(demos))
    assert len(problems) == 1 and problems[0].startswith("episode 1:"), problems
    if how == "truncate":  # a chunk that fails to decode is named by key and step
        assert "rgb_front unreadable at step 2 (store step 7): RuntimeError" in problems[0]
    assert (demos / "data" / "rgb_front").is_dir()  # nothing deleted
    assert store_cli(["verify", str(demos)]) == 1


def test_fuzz_random_corruptions_are_all_detected(tmp_path: Path) -> None:
    """Random corruptions of random frames: every one is detected, in the episode it hit."""
    clean = make_demos(tmp_path / "clean.zarr", lengths=LENGTHS)
    rng = np.random.default_rng(1)
    starts = np.cumsum((0, *LENGTHS[:-1]))
    for trial in range(12):
        demos = tmp_path / f"t{trial}.zarr"
        shutil.copytree(clean, demos)
        step = int(rng.integers(sum(LENGTHS)))
        how = ["delete", "truncate", "bitflip"][trial % 3]
        f = chunk(demos, "rgb_front", step)
        data = f.read_bytes()
        if how == "delete":
            f.unlink()
        elif how == "truncate":
            f.write_bytes(data[: int(rng.integers(1, len(data)))])
        else:
            b = bytearray(data)
            b[int(rng.integers(16, len(b)))] ^= 1 << int(rng.integers(8))
            f.write_bytes(bytes(b))
        episode = int(np.searchsorted(starts, step, side="right") - 1)
        problems = verify_store(EpisodeStore.open(demos))
        assert problems and problems[0].startswith(f"episode {episode}:"), (trial, how, step, problems)


def test_cache_refuses_a_store_edited_under_its_digests(tmp_path: Path) -> None:
    """The store's fingerprint does not change when a frame is edited; the cache notices anyway."""
    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    before = EpisodeStore.open(demos).fingerprint
    corrupt(demos, "edit", np.random.default_rng(0))
    assert EpisodeStore.open(demos).fingerprint == before  # why the cache must check digests itself
    enc = FrozenS2Encoder(EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32], dtype="float32"))
    with pytest.raises(ValueError, match=r"(?s)episode 1: its arrays differ.*store verify"):
        build_feature_cache(demos, enc, out=tmp_path / "c.zarr", batch_size=4, progress=False)
