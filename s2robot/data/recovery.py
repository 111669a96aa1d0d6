"""What an EpisodeStore's commit state says after its writer was killed: which episodes are committed, which
interrupted append is provably complete (and is rolled forward), and which trailing steps are provably torn.

An append (``EpisodeStore.add_episodes``) writes, in this order:

1. the data arrays, resized and written;
2. the info entries (with any user attrs given with them, e.g. the recorder's attempt list) in one zarr.json
   write, which zarr makes atomic (temporary file + rename);
3. ``meta/episode_ends`` resized — the new entries read as the fill value 0 — and then its values written.

So a kill leaves one of three signatures, and only these:

- **info entries past the last end** (killed after 2): their data was written before them; when it hashes to
  the info's digest the episode is complete and is **rolled forward** (its end written), so nothing is lost;
- **trailing entries in episode_ends that are 0 or the end their info implies** (killed inside 3, which zarr may
  write chunk by chunk in any order): the same, and rolled forward the same way;
- **data steps past the last end with no info entry** (killed inside 1): a torn data write, dropped.

Anything else — an entry that does not increase, runs past the data, disagrees with its info's length, or is
non-zero past the committed ones, or an uncommitted info whose data does not match its digest — is not what a
killed writer leaves: it is refused as damage, with nothing changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2robot.data.episode import episode_digest

ReadSteps = Callable[[int, int], Mapping[str, np.ndarray]]  # [start, stop) -> {key: (stop - start, ...)}


@dataclass
class CommitState:
    """The store as committed after recovery."""

    ends: np.ndarray  # (E,) int64 exclusive end steps
    episodes: list[dict[str, Any]]  # E info entries (missing ones rebuilt from the data)
    rolled_forward: int = 0  # episodes completed from an interrupted commit
    torn_ends: int = 0  # trailing 0 entries of episode_ends that an interrupted commit left
    torn_steps: dict[str, int] = field(default_factory=dict)  # key -> steps past ends[-1] (a torn data write)
    notes: list[str] = field(default_factory=list)  # what was found, for the warning and `verify`


def _damaged(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: {what}. A killed writer cannot leave this: the store was edited or damaged. Nothing "
                      f"was changed; run `python -m s2robot.workflows.store verify {path}` to see every problem, "
                      "then copy out the good episodes or re-record")


def commit_state(path: Path, ends: np.ndarray, episodes: Sequence[Mapping[str, Any]], n_data: Mapping[str, int],
                 read: ReadSteps) -> CommitState:
    """Decide what is committed; see the module docstring. ``ends`` (E',) as stored, ``episodes`` the info entries
    as stored, ``n_data`` every data key's length, ``read`` reads steps of all keys. Raises on damage."""
    n_min = min(n_data.values(), default=0)
    for i, e in enumerate(episodes):
        if not (isinstance(e, Mapping) and isinstance(e.get("length"), int) and isinstance(e.get("digest"), str)):
            raise _damaged(path, f"episode info entry {i} is {e!r}, not a {{'length': int, 'digest': str, ...}} entry")
    prev, n_valid = 0, 0
    for i, end in enumerate(int(e) for e in ends):
        info_len = episodes[i]["length"] if i < len(episodes) else None
        if end - prev < 1 or end > n_min or (info_len is not None and info_len != end - prev):
            break
        prev, n_valid = end, n_valid + 1
    # Past the committed ends, an interrupted commit leaves each new entry either unwritten (0) or written with the
    # end its info implies: zarr may write the chunks of a multi-chunk commit in any order.
    implied = prev + np.cumsum([e["length"] for e in episodes[n_valid:len(ends)]], dtype=np.int64)
    for i in range(n_valid, len(ends)):
        end = int(ends[i])
        if end != 0 and (i >= len(episodes) or end != int(implied[i - n_valid])):
            info_len = episodes[i]["length"] if i < len(episodes) else "no info entry"
            raise _damaged(path, f"meta/episode_ends[{i}] = {end} after a committed end of {prev} (episode info "
                                 f"length: {info_len}; {n_min} data steps)")
    state = CommitState(np.asarray(ends[:n_valid], dtype=np.int64), [dict(e) for e in episodes[:n_valid]],
                        torn_ends=len(ends) - n_valid)
    for i in range(len(state.episodes), n_valid):  # info missing (a store written by another tool): rebuild it
        start = int(ends[i - 1]) if i else 0
        state.episodes.append({"length": int(ends[i]) - start, "digest": episode_digest(read(start, int(ends[i]))),
                               "info": {}})
    for i in range(n_valid, len(episodes)):  # info written, end not: complete if the data matches its digest
        length = int(episodes[i]["length"])
        if length < 1 or prev + length > n_min or episode_digest(read(prev, prev + length)) != episodes[i]["digest"]:
            raise _damaged(path, f"episode info entry {i} (length {length}) has no committed end, and the "
                                 f"{n_min - prev} data steps after step {prev} do not match its digest")
        prev += length
        state.ends = np.append(state.ends, np.int64(prev))
        state.episodes.append(dict(episodes[i]))
        state.rolled_forward += 1
    if state.rolled_forward:
        first = len(state.ends) - state.rolled_forward
        state.notes.append(f"{state.rolled_forward} episode(s) ({first}–{len(state.ends) - 1}) whose append was "
                           "interrupted at its commit point (episode_ends unwritten) are complete (their data matches "
                           "their digests) and are kept")
    elif state.torn_ends:
        state.notes.append(f"{state.torn_ends} unwritten episode_ends entr(y/ies) of an interrupted commit")
    state.torn_steps = {k: n - prev for k, n in sorted(n_data.items()) if n > prev}
    if state.torn_steps:
        state.notes.append(f"{max(state.torn_steps.values())} trailing steps past the last episode end (step {prev}) "
                           "with no episode info: a torn data write, in "
                           + ", ".join(f"{k}: {v}" for k, v in state.torn_steps.items()))
    return state


def attrs_checksum(attrs: Mapping[str, Any]) -> str:
    """sha256 of every root attr but the checksum itself (format, schema version, creation time, software, user attrs,
    episode info entries), written with them by every EpisodeStore write of schema version 2: an edit made around the
    EpisodeStore API (a hand-edited or bit-flipped zarr.json that still parses) no longer matches it."""
    doc = json.dumps({k: v for k, v in attrs.items() if k != "checksum"}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def attrs_checksum_v1(user: Mapping[str, Any], episodes: Sequence[Mapping[str, Any]]) -> str:
    """The checksum of schema version 1 (optional there): the user attrs and episode infos only. Read only to check a
    version-1 store before ``python -m s2robot.workflows.store upgrade`` signs it with ``attrs_checksum``."""
    doc = json.dumps({"user": user, "episodes": list(episodes)}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()
