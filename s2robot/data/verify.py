"""Is a store still what was written? Every episode's arrays read back and hashed against the digest stored when it
was appended; unreadable data named by key and step (one chunk per frame for images).

The store's fingerprint hashes the stored digests, so it cannot see an edited frame, a deleted chunk (which reads
back as fill values) or a truncated one: ``verify_store`` can. The feature cache checks the same digests of every
episode it encodes, so it never caches a store that changed under its digests.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from s2robot.data.store import EpisodeStore


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


def verify_path(path: Path) -> list[str]:
    """``verify_store`` of the store at ``path``, opened read-only (nothing is repaired or deleted); a store that
    cannot be opened (damaged episode_ends or infos, not a store) is one problem naming why."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what the warning says is in store.recovered
            store = EpisodeStore.open(path, mode="r")
    except (FileNotFoundError, ValueError) as e:
        return [f"cannot open: {e}"]
    return verify_store(store)


def verify_store(store: EpisodeStore) -> list[str]:
    """Problems found, one line each naming the episode (and key and step where reading fails); [] if none. An
    interrupted append found at open (to be repaired by the next writer) and attrs edited around the API count too."""
    problems = [f"interrupted append: {note}" for note in store.recovered] + list(store.integrity)
    for i in range(store.n_episodes):
        try:
            data = store.get_episode(i)
        except Exception:
            problems += _unreadable(store, i)
            continue
        if not store.matches_digest(i, data):
            bad = [k for k, v in data.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]
            hint = f" (non-finite values in {bad})" if bad else ""
            problems.append(f"episode {i}: its arrays differ from the digest stored when it was recorded: edited or "
                            f"deleted chunks{hint}")
    return problems
