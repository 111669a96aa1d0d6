"""Is a store still what was written? Every episode's arrays read back and hashed against the digests stored when it
was appended (naming the keys that changed); unreadable data named by key and step (one chunk per frame for images);
unreadable metadata named by file. And the one-time upgrade of a schema-1 store, which signs only what verifies.

The store's fingerprint hashes the stored digests, so it cannot see an edited frame, a deleted chunk (which reads
back as fill values) or a truncated one: ``verify_store`` can. The feature cache checks the same digests of every
episode it encodes, so it never caches a store that changed under its digests.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s2robot.data.episode import key_digests
from s2robot.data.store import SCHEMA_VERSION, EpisodeStore


def _unreadable(store: EpisodeStore, i: int) -> list[str]:
    """The keys (and the first step) of episode ``i`` that fail to read."""
    start, stop = store.episode_bounds(i)
    problems = []
    for k in store.keys:
        try:
            store.get_steps(k, start, stop)
        except Exception as e:  # zarr/blosc raise many kinds; each is reported, never raised
            step = next((t for t in range(start, stop) if not _reads(store, k, t)), start)
            problems.append(f"episode {i}: {k} unreadable at step {step - start} (store step {step}): "
                            f"{type(e).__name__}: {e}")
    return problems


def _reads(store: EpisodeStore, key: str, t: int) -> bool:
    try:
        store.get_steps(key, t, t + 1)
    except Exception:
        return False
    return True


def _check_episode(store: EpisodeStore, i: int) -> tuple[list[str], dict[str, np.ndarray] | None]:
    """(problems, arrays read back) of episode ``i``: keys that fail to read, or that no longer match their digests."""
    try:
        data = store.get_episode(i)
    except Exception:
        return _unreadable(store, i), None
    if store.matches_digest(i, data):
        return [], data
    differ = "its arrays differ from the digest stored when it was recorded"
    keys = store.mismatched_keys(i, data)
    if keys == []:
        return [f"episode {i}: {differ}, though every key matches its own digest: the stored digest was edited"], data
    bad = [k for k in keys or data if np.issubdtype(data[k].dtype, np.floating) and not np.isfinite(data[k]).all()]
    hint = f" (non-finite values in {bad})" if bad else ""
    where = f", in {', '.join(keys)}" if keys else ""  # None: the entry has no per-key digests
    return [f"episode {i}: {differ}{where}: edited or deleted chunks{hint}"], data


def verify_path(path: Path) -> list[str]:
    """``verify_store`` of the store at ``path``, opened read-only (nothing is repaired or deleted); a store that
    cannot be opened (damaged metadata, episode_ends or infos, a schema-1 store, not a store) is one problem naming
    why."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what the warning says is in store.recovered
            store = EpisodeStore.open(path, mode="r")
    except (FileNotFoundError, ValueError) as e:
        return [f"cannot open: {e}"]
    except Exception as e:  # open names the damage it knows; anything else is still a report, not a traceback
        return [f"cannot open {path}: {type(e).__name__}: {e}"]
    return verify_store(store)


def verify_store(store: EpisodeStore) -> list[str]:
    """Problems found, one line each naming the episode (and the keys that changed, or key and step where reading
    fails); [] if none. An interrupted append found at open (to be repaired by the next writer) and attrs edited around
    the API (or unsigned) count too."""
    problems = [f"interrupted append: {note}" for note in store.recovered] + list(store.integrity)
    for i in range(store.n_episodes):
        problems += _check_episode(store, i)[0]
    return problems


@dataclass
class Upgrade:
    """What ``upgrade_path`` did: refused (``problems``, nothing changed) or signed (``report``, lines to print)."""

    problems: list[str] = field(default_factory=list)
    report: list[str] = field(default_factory=list)


def upgrade_path(path: Path) -> Upgrade:
    """Sign the schema-1 store at ``path`` as schema version 2 (``python -m s2robot.workflows.store upgrade``).

    Every episode is re-read against its digest and the attrs against their version-1 checksum (when they have one);
    any problem refuses the upgrade with nothing changed. Then an interrupted append is repaired as any writer would,
    and the per-key digests, schema version 2 and the attrs checksum are written in one zarr.json write. The data
    and the fingerprint (the key of the store's feature caches) are unchanged.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported below
            store = EpisodeStore._open(path, "r", (1, SCHEMA_VERSION))
    except (FileNotFoundError, ValueError) as e:
        return Upgrade(problems=[f"cannot open: {e}"])
    if store.schema_version == SCHEMA_VERSION:
        return Upgrade(report=[f"{path}: already schema version {SCHEMA_VERSION}, nothing to do (check its data with "
                               f"python -m s2robot.workflows.store verify {path})"])
    problems, digests = list(store.integrity), []
    for i in range(store.n_episodes):
        found, data = _check_episode(store, i)
        problems += found
        if data is not None:
            digests.append(key_digests(data))
    if problems:
        return Upgrade(problems=problems)
    unsigned = store._root.attrs.get("checksum") is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # store.recovered, reported below
        writer = EpisodeStore._open(path, "a", (1,))
    if writer.episode_ends.tolist() != store.episode_ends.tolist() or writer.fingerprint != store.fingerprint:
        return Upgrade(problems=["the store changed while it was being verified (another writer?); run the upgrade "
                                 "again when nothing else writes to it"])
    checksum = writer._sign(digests)
    report = [f"{path}: signed, schema version 1 → {SCHEMA_VERSION}",
              f"  {store.n_episodes} episodes ({store.n_steps} steps) match their digests; stored per-key digests of "
              f"{', '.join(store.keys) or 'no keys'}",
              f"  fingerprint unchanged (its feature caches stay valid): {writer.fingerprint}",
              f"  attrs checksum {checksum} over: format, schema_version, created_utc, software, "
              f"{store.n_episodes} episode infos and the user attrs:"]
    for k, v in writer.attrs.items():
        text = json.dumps(v)
        report.append(f"    {k} = {text if len(text) <= 100 else text[:97] + '...'}")
    report += [f"  repaired an interrupted append: {note}" for note in store.recovered]
    if unsigned:
        report.append("  note: the attrs had no checksum (written before schema 1 stores had one), so they were "
                      "signed as found: check that the user attrs above are what was recorded")
    return Upgrade(report=report)
