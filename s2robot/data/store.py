"""EpisodeStore: recorded episodes in one zarr 3 group, in the Diffusion Policy ReplayBuffer layout.

Layout (T total steps over all episodes, E episodes, S image size)::

    <path>/                       root group; attrs below
      data/rgb_<camera>           (T, S, S, 3) uint8, one chunk per frame, Blosc/zstd
      data/proprio, data/action   (T, 8) float32
      data/<any other key>        (T, ...) its own dtype, e.g. feat_<camera> (T, F) float16
      meta/episode_ends           (E,) int64, exclusive end step of every episode

    attrs: format, schema_version, created_utc, software (python/numpy/zarr/s2robot versions),
           user (free-form: env id and config, cameras, image size, control rate, seeds, ...),
           episodes (one {"length", "digest", "key_digests", "info"} per episode),
           checksum (sha256 of all the other attrs, ``recovery.attrs_checksum``; required since schema version 2)

Appending is crash-safe for a single writer: an episode's data arrays are resized and written first,
then its info entry, and last `meta/episode_ends` (the commit point: `episode_ends` is the source of
truth). A process killed mid-episode leaves trailing steps past `episode_ends[-1]` (and maybe an info
entry too many); `open` ignores them (mode "r") or truncates them (mode "a") with a warning.

Metadata that cannot be read (a damaged zarr.json or episode_ends chunk) or attrs that do not match their checksum
are never repaired: `open` raises a ValueError naming the damaged file (or, for the checksum, refuses mode "a" and
lists it in `integrity`), and `python -m s2robot.workflows.store verify PATH` reports it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from s2robot.data.episode import check_json, episode_digest, episode_entry, key_digests, not_replaceable
from s2robot.data.keys import is_rgb
from s2robot.data.recovery import attrs_checksum, attrs_checksum_v1, commit_state
from s2robot.data.store_meta import (
    FORMAT,
    SCHEMA_VERSION,
    checksum_problems,
    damaged,
    data_arrays,
    open_metadata,
    software_versions,
)

# What the fingerprint hashes instead of SCHEMA_VERSION: the data layout (arrays, episode_ends, digests), unchanged by
# version 2. Feature caches are keyed by their demo store's fingerprint, so bumping this makes every cache stale;
# bump it only when the stored values or their meaning change.
LAYOUT_VERSION = 1
_CHUNK_BYTES = 1 << 20  # time-chunk size of non-image keys (~1 MiB per chunk)
_ENDS_CHUNK = 1024


class EpisodeStore:
    """Episodes of per-step arrays concatenated along time; see the module docstring for the layout.

    Create with `EpisodeStore.create(path)`, open with `EpisodeStore.open(path, mode="r" | "a")`.
    Readers see a snapshot taken at open (plus their own appends). One writer at a time.
    """

    def __init__(self, root: zarr.Group, path: Path, mode: str) -> None:
        """Internal: use `create` or `open`."""
        self._root, self.path, self.mode = root, path, mode
        self._ends = np.zeros(0, dtype=np.int64)  # (E,)
        self._episodes: list[dict[str, Any]] = []
        self._specs: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}  # key -> (dtype, per-step shape)
        self._fingerprint: str | None = None
        self.schema_version = SCHEMA_VERSION
        self.integrity: list[str] = []  # attrs that no longer match their checksum (found at open)
        self.recovered: list[str] = []  # what open found of an interrupted append

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, path: str | Path, attrs: Mapping[str, Any] | None = None,
               overwrite: bool = False) -> EpisodeStore:
        """Create an empty store at `path` (opened in mode "a"); keys come from the first episode."""
        path = Path(path)
        user = check_json(dict(attrs or {}), "EpisodeStore attrs")
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists; open it with EpisodeStore.open({str(path)!r}, "
                                      "mode='a') to append, pick another path, or pass overwrite=True")
            reason = not_replaceable(path, user.get("kind"), FORMAT)
            if reason:
                raise FileExistsError(f"refusing to replace {path}: {reason}. Nothing was deleted; choose another "
                                      "path, or remove it yourself if you are sure")
            shutil.rmtree(path)
        root = zarr.open_group(path, mode="w")
        root.create_group("data")
        root.require_group("meta").create_array("episode_ends", shape=(0,), chunks=(_ENDS_CHUNK,),
                                                dtype="int64", fill_value=0)
        attrs = {
            "format": FORMAT, "schema_version": SCHEMA_VERSION,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "software": software_versions(), "user": user, "episodes": [],
        }
        root.update_attributes({**attrs, "checksum": attrs_checksum(attrs)})
        return cls(root, path, "a")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> EpisodeStore:
        """Open an existing store read-only (mode "r", default) or for appending (mode "a").

        Steps past the last committed episode (left by a killed writer) are ignored in mode "r" and
        truncated in mode "a", with a warning saying how many were dropped. Unreadable metadata raises a
        ValueError naming the damaged file; nothing is ever changed then.
        """
        return cls._open(path, mode, (SCHEMA_VERSION,))

    @classmethod
    def _open(cls, path: str | Path, mode: str, versions: tuple[int, ...]) -> EpisodeStore:
        """`open`, reading the schema ``versions`` given (``data.verify.upgrade_path`` also reads version 1)."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' (read-only) or 'a' (append), got {mode!r}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no EpisodeStore at {path}: the path does not exist; "
                                    "create one with EpisodeStore.create(path)")
        root, version = open_metadata(path, mode, versions)
        store = cls(root, path, mode)
        store.schema_version = version
        store._load()
        return store

    def _load(self) -> None:
        """Read episode_ends and infos; recover from an interrupted append (see ``data.recovery``)."""
        ends_arr = self._root["meta/episode_ends"]
        try:
            ends = np.asarray(ends_arr[:], dtype=np.int64)
        except Exception as e:  # zarr/blosc/zstd raise many kinds for a truncated or bit-flipped chunk
            raise damaged(self.path, "meta/episode_ends chunk data (meta/episode_ends/c/)", e) from None
        arrays = data_arrays(self._root, self.path)
        attrs = self._root.attrs.asdict()
        stored = list(attrs.get("episodes", []))
        try:
            state = commit_state(self.path, ends, stored, {k: a.shape[0] for k, a in arrays.items()},
                                 lambda start, stop: {k: a[start:stop] for k, a in arrays.items()})
        except ValueError:
            raise
        except Exception as e:  # reading the data of an uncommitted episode, to see whether it is complete
            raise damaged(self.path, "data past the last episode end (read to complete an interrupted append)",
                          e) from None
        self.integrity = checksum_problems(attrs, stored, self.schema_version)
        if self.mode == "a" and self.integrity:  # appending would re-sign (and maybe rebuild) what was edited
            raise ValueError(f"{self.path}: {self.integrity[0]}. Opening it to append would sign the edit as ours, "
                             "so nothing was changed: restore its zarr.json, or copy the episodes you trust into a new "
                             f"store (python -m s2robot.workflows.store verify {self.path} lists what else is wrong)")
        if self.mode == "a":
            if state.torn_ends or state.rolled_forward:
                if ends_arr.shape[0] > len(state.ends):  # zero before shrinking: a later resize cannot resurrect
                    ends_arr[len(state.ends):] = 0
                ends_arr.resize((len(state.ends),))
                if len(state.ends):
                    ends_arr[:] = state.ends
            n_steps = int(state.ends[-1]) if len(state.ends) else 0
            for k in state.torn_steps:
                if n_steps == 0:
                    del self._root["data"][k]  # keys are redefined by the next first episode
                else:
                    arrays[k].resize((n_steps, *arrays[k].shape[1:]))
            if state.episodes != stored:
                self._write_attrs(episodes=state.episodes)
        self._ends, self._episodes, self.recovered = state.ends, state.episodes, state.notes
        self._read_specs(arrays)
        if state.notes:
            verb = "repaired" if self.mode == "a" else "found (open with mode='a' to repair)"
            warnings.warn(f"EpisodeStore {self.path}: {verb} an interrupted append: " + "; ".join(state.notes),
                          stacklevel=4)  # the caller of open

    # ------------------------------------------------------------------ reading
    @property
    def n_episodes(self) -> int:
        """E, the number of committed episodes."""
        return len(self._ends)

    def __len__(self) -> int:
        """E, the number of committed episodes."""
        return self.n_episodes

    @property
    def n_steps(self) -> int:
        """T, the total number of steps over all episodes."""
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_ends(self) -> np.ndarray:
        """(E,) int64 exclusive end step of every episode (a copy)."""
        return self._ends.copy()

    @property
    def episode_lengths(self) -> np.ndarray:
        """(E,) int64 number of steps of every episode."""
        return np.diff(self._ends, prepend=0)

    def _read_specs(self, arrays: Mapping[str, zarr.Array]) -> None:
        arrays = arrays if len(self._ends) else {}
        self._specs = {k: (np.dtype(a.dtype), tuple(a.shape[1:])) for k, a in sorted(arrays.items())}

    @property
    def keys(self) -> tuple[str, ...]:
        """Sorted per-step keys; empty until the first episode is added."""
        return tuple(self._specs)

    def spec(self, key: str) -> tuple[np.dtype, tuple[int, ...]]:
        """(dtype, per-step shape) of `key`, e.g. (uint8, (S, S, 3)) for rgb_<camera>."""
        self._array(key)
        return self._specs[key]

    def array(self, key: str) -> zarr.Array:
        """The zarr array of `key` (chunks, stored bytes); read steps with `get_steps`."""
        return self._array(key)

    def _array(self, key: str) -> zarr.Array:
        if key not in self._specs:
            raise KeyError(f"{self.path} has no key {key!r}; available: {list(self.keys)}")
        return self._root["data"][key]

    def episode_bounds(self, i: int) -> tuple[int, int]:
        """[start, stop) steps of episode `i`."""
        return self._episode_bounds(i)

    def _episode_bounds(self, i: int) -> tuple[int, int]:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range: {self.path} has {self.n_episodes} episodes")
        i %= self.n_episodes
        return (int(self._ends[i - 1]) if i else 0), int(self._ends[i])

    def get_episode(self, i: int) -> dict[str, np.ndarray]:
        """All arrays of episode `i`: {key: (T_i, ...)}."""
        start, stop = self._episode_bounds(i)
        return {k: self._root["data"][k][start:stop] for k in self.keys}

    def get_steps(self, key: str, start: int, stop: int) -> np.ndarray:
        """Steps [start, stop) of `key` across episodes, (stop - start, ...), for bulk reads."""
        if not 0 <= start <= stop <= self.n_steps:
            raise IndexError(f"steps [{start}, {stop}) out of range [0, {self.n_steps}] in {self.path}")
        return self._array(key)[start:stop]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Episodes in order, as `get_episode` dicts."""
        return (self.get_episode(i) for i in range(self.n_episodes))

    def matches_digest(self, i: int, data: Mapping[str, np.ndarray]) -> bool:
        """Whether ``data`` (episode ``i`` as read back) hashes to the digest stored when it was appended."""
        self._episode_bounds(i)
        return episode_digest(data) == self._episodes[i]["digest"]

    def mismatched_keys(self, i: int, data: Mapping[str, np.ndarray]) -> list[str] | None:
        """The keys of ``data`` (episode ``i`` as read back) that no longer hash to their own digests stored when it
        was appended; None when its entry has no per-key digests (rebuilt from the data, or written by another tool)."""
        self._episode_bounds(i)
        stored = self._episodes[i].get("key_digests")
        if not isinstance(stored, Mapping):
            return None
        found = key_digests(data)
        return sorted(k for k in {*found, *stored} if found.get(k) != stored.get(k))

    def episode_info(self, i: int) -> dict[str, Any]:
        """The info dict passed with episode `i`, plus its "length"."""
        self._episode_bounds(i)
        ep = self._episodes[i]
        return {**ep["info"], "length": ep["length"]}

    @property
    def attrs(self) -> Mapping[str, Any]:
        """User attrs (env config, cameras, seeds, ...), read-only; change them with `update_attrs`."""
        return MappingProxyType(json.loads(json.dumps(self._root.attrs.get("user", {}))))

    @property
    def software(self) -> dict[str, str]:
        """Software versions recorded when the store was created."""
        return dict(self._root.attrs.get("software", {}))

    @property
    def fingerprint(self) -> str:
        """sha256 hex of what a derived artifact (e.g. a feature cache) depends on.

        Covers: the layout version (LAYOUT_VERSION, not SCHEMA_VERSION: a schema change of the attrs alone
        keeps derived artifacts valid), every key's name/dtype/per-step shape, episode_ends, and every episode's
        content digest (sha256 of its arrays' bytes, computed once in `add_episode`). Does not cover user
        attrs, episode infos, per-key digests, chunking or compression (they do not change the stored values).
        """
        if self._fingerprint is None:
            doc = {"schema_version": LAYOUT_VERSION,
                   "keys": [[k, self.spec(k)[0].str, list(self.spec(k)[1])] for k in self.keys],
                   "episode_ends": self._ends.tolist(), "digests": [ep["digest"] for ep in self._episodes]}
            self._fingerprint = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return (f"EpisodeStore({str(self.path)!r}, mode={self.mode!r}, episodes={self.n_episodes}, "
                f"steps={self.n_steps}, keys={list(self.keys)})")

    # ------------------------------------------------------------------ writing
    def _check_writable(self) -> None:
        if self.mode != "a":
            raise PermissionError(f"{self.path} was opened read-only; use EpisodeStore.open(path, mode='a') "
                                  "to append or update attrs")

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Merge `attrs` (JSON-able) into the user attrs; mode "a" only."""
        self._check_writable()
        self._write_attrs(user=check_json(dict(attrs), "attrs"))

    def _write_attrs(self, user: Mapping[str, Any] | None = None,
                     episodes: Sequence[Mapping[str, Any]] | None = None) -> None:
        """One atomic zarr.json write of merged user attrs and/or the episode infos, with their checksum."""
        attrs = self._root.attrs.asdict()
        user = {**attrs.get("user", {}), **(user or {})}
        episodes = list(attrs.get("episodes", []) if episodes is None else episodes)
        checksum = (attrs_checksum_v1(user, episodes) if self.schema_version == 1  # repaired while upgrading
                    else attrs_checksum({**attrs, "user": user, "episodes": episodes}))
        self._root.update_attributes({"user": user, "episodes": episodes, "checksum": checksum})

    def _sign(self, digests: Sequence[Mapping[str, str]]) -> str:
        """Internal (``data.verify.upgrade_path``, after every episode matched its digest): the per-key
        ``digests`` of every episode, schema version 2 and the attrs checksum in one zarr.json write; the checksum."""
        self._check_writable()
        episodes = [{**e, "key_digests": dict(d)} for e, d in zip(self._episodes, digests, strict=True)]
        attrs = {**self._root.attrs.asdict(), "schema_version": SCHEMA_VERSION, "episodes": episodes}
        checksum = attrs_checksum(attrs)
        self._root.update_attributes({"schema_version": SCHEMA_VERSION, "episodes": episodes, "checksum": checksum})
        self._episodes, self.schema_version, self.integrity = episodes, SCHEMA_VERSION, []
        return checksum

    def add_episode(self, data: Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None) -> None:
        """Append one episode {key: (T, ...)} with an optional JSON-able info dict (seed, success, ...).

        All arrays must share T >= 1; after the first episode, keys, dtypes and per-step shapes must match
        the store's. A rejected episode changes nothing.
        """
        self.add_episodes([(data, info)])

    def add_episodes(self, episodes: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, Any] | None]],
                     attrs: Mapping[str, Any] | None = None) -> None:
        """Append several ``(data, info)`` episodes with one write per key and one commit: after a crash all of
        them are visible or none (the feature cache writes this way). All are validated before any write.

        ``attrs`` (JSON-able) are merged into the user attrs in the same atomic write as the episodes' infos, so
        bookkeeping about them (the recorder's attempt list) is committed with them or not at all.
        """
        self._check_writable()
        episodes = list(episodes)
        if not episodes:
            return
        if self.keys:
            specs = {k: self.spec(k) for k in self.keys}
        else:  # the first episode defines the keys, dtypes and shapes
            first, info = episodes[0]
            episode_entry(first, info, {})
            specs = {k: (np.dtype(v.dtype), tuple(v.shape[1:])) for k, v in first.items()}
        entries = [episode_entry(data, info, specs) for data, info in episodes]
        user = check_json(dict(attrs or {}), "attrs")
        if not self.keys:
            self._create_arrays(episodes[0][0])
        n = self.n_steps
        for k in sorted(specs):
            self._write_key(k, n, np.concatenate([data[k] for data, _ in episodes]))
        self._commit(entries, user)

    def _create_arrays(self, data: Mapping[str, np.ndarray]) -> None:
        group = self._root["data"]
        for k in list(group.array_keys()):  # left by a first episode that failed part-way
            del group[k]
        for k, v in data.items():
            step_bytes = max(1, v[0].nbytes)
            is_image = is_rgb(k)
            chunk_t = 1 if is_image else max(1, min(4096, _CHUNK_BYTES // step_bytes))
            codec = BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle" if is_image else "shuffle")
            group.create_array(k, shape=(0, *v.shape[1:]), chunks=(chunk_t, *v.shape[1:]), dtype=v.dtype,
                               compressors=codec, fill_value=0)

    def _write_key(self, key: str, start: int, value: np.ndarray) -> None:
        arr = self._root["data"][key]
        arr.resize((start + len(value), *arr.shape[1:]))
        arr[start:] = value

    def _commit(self, entries: list[dict[str, Any]], attrs: Mapping[str, Any] | None) -> None:
        """Make episodes visible: info entries (with ``attrs``) in one write, then episode_ends (the commit point)."""
        self._write_attrs(user=attrs, episodes=[*self._episodes, *entries])
        new_ends = self.n_steps + np.cumsum([e["length"] for e in entries], dtype=np.int64)
        ends = self._root["meta/episode_ends"]
        ends.resize((len(self._ends) + len(entries),))
        ends[len(self._ends):] = new_ends
        first = len(self._ends) == 0
        self._ends = np.concatenate([self._ends, new_ends])
        self._episodes.extend(entries)
        if first:
            self._read_specs(data_arrays(self._root, self.path))
        self._fingerprint = None
