"""verify_store: edited, deleted, truncated and bit-flipped chunks are found and named, nothing is deleted; the
feature cache refuses a store whose episodes no longer match their digests; damaged
metadata (root zarr.json, episode_ends chunks) and removed checksums are reported, never raised."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import make_demos

from s2robot.data.features import build_feature_cache
from s2robot.data.store import EpisodeStore
from s2robot.data.verify import verify_path, verify_store
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
    elif how != "bitflip":  # decodable damage is named by key: the other keys still match their own digests
        key = "action" if how == "action" else "rgb_front"
        assert f"episode 1: its arrays differ from the digest stored when it was recorded, in {key}:" in problems[0]
    assert (demos / "data" / "rgb_front").is_dir()  # nothing deleted
    assert store_cli(["verify", str(demos)]) == 1


def test_fuzz_random_corruptions_are_all_detected(tmp_path: Path) -> None:
    """Random corruptions of random frames: every one is detected, in the episode it hit, naming the key; verify
    changes no file."""
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
        before = snapshot(demos)
        problems = verify_store(EpisodeStore.open(demos))
        assert problems and problems[0].startswith(f"episode {episode}:"), (trial, how, step, problems)
        assert "rgb_front" in problems[0], (trial, how, step, problems)
        assert snapshot(demos) == before, (trial, how, step)


def test_cache_refuses_a_store_edited_under_its_digests(tmp_path: Path) -> None:
    """The store's fingerprint does not change when a frame is edited; the cache notices anyway."""
    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    before = EpisodeStore.open(demos).fingerprint
    corrupt(demos, "edit", np.random.default_rng(0))
    assert EpisodeStore.open(demos).fingerprint == before  # why the cache must check digests itself
    enc = FrozenS2Encoder(EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32], dtype="float32"))
    with pytest.raises(ValueError, match=r"(?s)episode 1: its arrays differ.*store verify"):
        build_feature_cache(demos, enc, out=tmp_path / "c.zarr", batch_size=4, progress=False)


def snapshot(path: Path) -> list[tuple[Path, bytes]]:
    return sorted((p.relative_to(path), p.read_bytes()) for p in path.rglob("*") if p.is_file())


EDITS = ("end", "end_zero_mid", "length", "digest", "info", "user", "drop_info", "format", "no_checksum")


def edit_metadata(path: Path, how: str, rng: np.random.Generator) -> tuple[str, str]:
    """One random edit of episode_ends or the attrs, made around the EpisodeStore API; (what, expected pattern)."""
    if how == "no_checksum":  # the attrs unsigned: a store of schema version 2 always has its checksum
        meta = json.loads((path / "zarr.json").read_text())
        del meta["attributes"]["checksum"]
        (path / "zarr.json").write_text(json.dumps(meta))
        return "checksum removed", "attrs: the attrs checksum is missing"
    root = zarr.open_group(path, mode="r+")
    ends = root["meta/episode_ends"]
    attrs = root.attrs.asdict()
    episodes = attrs["episodes"]
    i = int(rng.integers(len(LENGTHS)))
    if how == "end":  # any other value for one end
        old = int(ends[i])
        new = int(rng.choice([v for v in range(-1, sum(LENGTHS) + 3) if v != old]))
        ends[i] = new
        return f"episode_ends[{i}] {old} → {new}", r"episode_ends\[\d\]|episode info entry"
    if how == "end_zero_mid":
        i = min(i, len(LENGTHS) - 2)
        ends[i] = 0
        return f"episode_ends[{i}] → 0", rf"interrupted append: \d episode\(s\) \({i}–2\)"  # rolled forward
    if how == "length":
        episodes[i]["length"] += int(rng.choice([-1, 1]))
        pattern = rf"episode_ends\[{i}\]"
    elif how == "digest":
        episodes[i]["digest"] = "0" * 64
        pattern = rf"episode {i}: its arrays differ"
    elif how == "info":
        episodes[i]["info"]["seed"] = 99
        pattern = "attrs: .* edited around the EpisodeStore API"
    elif how == "user":
        attrs["user"]["env_id"] = "Other-v0"
        pattern = "attrs: .* edited around the EpisodeStore API"
    elif how == "drop_info":
        del episodes[-1]
        pattern = "attrs: .* edited around the EpisodeStore API"
    else:
        attrs["format"] = "something else"
        pattern = "not an EpisodeStore"
    root.update_attributes({"episodes": episodes, "user": attrs["user"], "format": attrs["format"]})
    return f"{how} of episode {i}", pattern


def test_fuzz_edited_episode_ends_and_attrs_are_all_detected(tmp_path: Path) -> None:
    """Random edits of episode_ends and of the attrs: verify names every one and changes nothing; the store CLI
    exits 1."""
    clean = make_demos(tmp_path / "clean.zarr", lengths=LENGTHS)
    assert verify_path(clean) == []
    assert_each_is_reported(clean, edit_metadata, EDITS, 24, np.random.default_rng(2))


Damage = Callable[[Path, str, np.random.Generator], tuple[str, str]]  # (store, kind, rng) -> (what, pattern)


def assert_each_is_reported(clean: Path, damage: Damage, kinds: tuple[str, ...], trials: int,
                            rng: np.random.Generator) -> None:
    """``trials`` copies of the store ``clean``, each damaged by ``damage(copy, kind, rng)`` (-> what, pattern): some
    problem verify reports matches the pattern, the store CLI exits 1, and no file of the copy changes."""
    for trial in range(trials):
        demos = clean.with_name(f"fuzz{trial}.zarr")
        shutil.copytree(clean, demos)
        what, pattern = damage(demos, kinds[trial % len(kinds)], rng)
        before = snapshot(demos)
        problems = verify_path(demos)
        assert any(re.search(pattern, p) for p in problems), (trial, what, problems)
        assert store_cli(["verify", str(demos)]) == 1, (trial, what)
        assert snapshot(demos) == before, (trial, what)
        shutil.rmtree(demos)


def test_verify_reports_an_interrupted_append(tmp_path: Path) -> None:
    """Trailing steps with no info (a killed writer) are reported, not repaired, by verify."""
    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    arr = zarr.open_array(demos / "data" / "action", mode="r+")
    arr.resize((sum(LENGTHS) + 2, *arr.shape[1:]))
    before = snapshot(demos)
    problems = verify_path(demos)
    assert len(problems) == 1 and "interrupted append: 2 trailing steps" in problems[0], problems
    assert snapshot(demos) == before


def test_episode_without_key_digests_is_named_as_a_whole(tmp_path: Path) -> None:
    """An info entry with no per-key digests (signed by a writer that kept none): the episode is named as a whole."""
    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    store = EpisodeStore.open(demos, mode="a")
    store._write_attrs(episodes=[{k: v for k, v in e.items() if k != "key_digests"} for e in store._episodes])
    corrupt(demos, "action", np.random.default_rng(0))
    assert verify_path(demos) == ["episode 1: its arrays differ from the digest stored when it was recorded: edited "
                                  "or deleted chunks"]


METADATA_DAMAGE = ("root_bitflip", "root_truncate", "ends_truncate")


def damage_metadata(path: Path, how: str, rng: np.random.Generator) -> tuple[str, str]:
    """One random bit flip or truncation of the root zarr.json, or truncation of the episode_ends chunk; (what,
    pattern some problem must match)."""
    f = path / "zarr.json" if how.startswith("root") else path / "meta" / "episode_ends" / "c" / "0"
    data = f.read_bytes()
    if how == "root_bitflip":
        b = bytearray(data)
        at, bit = int(rng.integers(len(b))), int(rng.integers(8))
        b[at] ^= 1 << bit
        f.write_bytes(bytes(b))
        # a flip that still parses changes a signed attr (checksum), the format, the schema version, or an episode
        # info entry so that it no longer fits episode_ends
        return f"bit {bit} of byte {at} ({data[at - 10:at + 10]!r})", (
            r"root zarr.json|^attrs: |not an EpisodeStore|schema version|episode info entry|episode_ends\[")
    cut = int(rng.integers(len(data)))
    f.write_bytes(data[:cut])
    return f"{f.name} cut to {cut} of {len(data)} bytes", "root zarr.json" if how == "root_truncate" else (
        "meta/episode_ends chunk")


def test_fuzz_damaged_metadata_is_reported_not_raised(tmp_path: Path) -> None:
    """Random bit flips and truncations of the root zarr.json and truncations of the episode_ends chunk: verify
    reports every one (naming the file) instead of raising, the store CLI exits 1, and no file is changed."""
    clean = make_demos(tmp_path / "clean.zarr", lengths=LENGTHS)
    assert_each_is_reported(clean, damage_metadata, METADATA_DAMAGE, 36, np.random.default_rng(3))
