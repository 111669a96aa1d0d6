"""An EpisodeStore's metadata: the software versions it records, and on opening its root group, attrs header,
nodes and attrs checksum.

Metadata that cannot be read (a damaged zarr.json) is never repaired: each check raises a ValueError naming the
damaged file and the fix, before ``data.store`` reads or changes anything. The attrs checksum is checked, not raised:
``checksum_problems`` lists what no longer matches, and the store refuses to append to it.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from s2robot.data.recovery import attrs_checksum, attrs_checksum_v1

# Version 2 requires the attrs checksum (version 1 accepted a store without one) and stores per-key digests; version-1
# stores are refused at open and signed once by `python -m s2robot.workflows.store upgrade PATH`.
SCHEMA_VERSION = 2
FORMAT = "s2robot.EpisodeStore"


def software_versions() -> dict[str, str]:
    """The ``software`` attr a store records when it is created: python, numpy, zarr and s2robot versions."""
    try:
        s2robot_version = importlib.metadata.version("s2robot")
    except importlib.metadata.PackageNotFoundError:
        s2robot_version = "unknown"
    return {"python": platform.python_version(), "numpy": np.__version__, "zarr": zarr.__version__,
            "s2robot": s2robot_version}


def damaged(path: Path, what: str, error: BaseException | str) -> ValueError:
    """The error for metadata of the store at ``path`` that cannot be read: names the file and the fix."""
    why = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return ValueError(f"{path}: the {what} is damaged ({why}). Nothing was changed; restore the store from a copy or "
                      f"re-record it (python -m s2robot.workflows.store verify {path} lists what else is wrong)")


def not_a_store(path: Path, why: str) -> ValueError:
    """The error for a path that holds something other than an EpisodeStore."""
    return ValueError(f"{path} is not an EpisodeStore ({why}); create one with EpisodeStore.create(path)")


def open_root(path: Path, mode: str) -> zarr.Group:
    """The root group of the store at ``path``; a root zarr.json that does not parse or is not zarr's is damage."""
    meta = path / "zarr.json"
    try:
        return zarr.open_group(path, mode="r" if mode == "r" else "r+")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        if not meta.is_file():
            raise not_a_store(path, f"not a zarr v3 group: {e}") from None
        error: BaseException = e
    except Exception as e:  # json, unicode, zarr metadata validation: each a damaged root zarr.json
        error = e
    try:
        node_type = json.loads(meta.read_bytes()).get("node_type")
    except Exception:
        node_type = None
    if node_type == "array":
        raise not_a_store(path, "a zarr array, not a group") from None
    raise damaged(path, "root zarr.json", error) from None


def read_node(root: zarr.Group, path: Path, name: str, kind: type) -> None:
    """Check that node ``name`` (``data``, ``meta/episode_ends``, ...) exists, reads and is a ``kind``."""
    try:
        node = root[name]
    except Exception as e:  # zarr raises KeyError for a missing node, anything for a damaged zarr.json
        if (path / name / "zarr.json").is_file():
            raise damaged(path, f"{name}/zarr.json", e) from None
        raise ValueError(f"{path} is missing '{name}': expected data/<key> arrays and meta/episode_ends (the store "
                         "is damaged); re-record it") from None
    if not isinstance(node, kind):
        raise damaged(path, f"{name}/zarr.json", f"a {type(node).__name__}, expected a {kind.__name__}")


def open_metadata(path: Path, mode: str, versions: tuple[int, ...]) -> tuple[zarr.Group, int]:
    """The root group of the existing store at ``path`` and its schema version, once its attrs say it is an
    EpisodeStore of one of ``versions`` and its ``data``, ``meta`` and ``meta/episode_ends`` nodes read."""
    root = open_root(path, mode)
    attrs = root.attrs.asdict()
    if attrs.get("format") != FORMAT or "schema_version" not in attrs:
        raise ValueError(f"{path} is a zarr group but not an EpisodeStore (attrs 'format' = "
                         f"{attrs.get('format')!r}, expected {FORMAT!r}); create one with "
                         "EpisodeStore.create(path)")
    version = attrs["schema_version"]
    if version == 1 and 1 not in versions:
        raise ValueError(f"{path} is an EpisodeStore of schema version 1, whose attrs checksum was optional; this "
                         f"s2robot reads version {SCHEMA_VERSION}. Upgrade it once with `python -m "
                         f"s2robot.workflows.store upgrade {path}`: it re-reads every episode against its digest "
                         "and then signs the attrs (the fingerprint, and so its feature caches, stay valid)")
    if version not in versions:
        raise ValueError(f"{path} has EpisodeStore schema version {version}, this "
                         f"s2robot reads version {SCHEMA_VERSION}; use the s2robot version that wrote it "
                         f"({attrs.get('software', {}).get('s2robot', '?')}) or re-record the store")
    if not isinstance(attrs.get("user", {}), dict) or not isinstance(attrs.get("episodes", []), list):
        raise damaged(path, "root zarr.json", "attrs 'user' is not a dict or 'episodes' not a list")
    for name, kind in (("data", zarr.Group), ("meta", zarr.Group), ("meta/episode_ends", zarr.Array)):
        read_node(root, path, name, kind)
    return root, version


def data_arrays(root: zarr.Group, path: Path) -> dict[str, zarr.Array]:
    """{key: array} of the store's data/; a key whose zarr.json cannot be read is damage, named."""
    group = root["data"]
    try:
        return dict(group.arrays())
    except Exception as e:  # find which key: zarr reads every key's zarr.json to list them
        error: BaseException = e
    for d in sorted(p for p in (path / "data").iterdir() if p.is_dir()):
        try:
            group[d.name]
        except Exception as e:
            raise damaged(path, f"data/{d.name}/zarr.json", e) from None
    raise damaged(path, "data/ metadata", error)


def checksum_problems(attrs: Mapping[str, Any], stored: Sequence[Any], schema_version: int) -> list[str]:
    """The integrity problem of the attrs, if any: a checksum that does not match them, or (schema version 2)
    none at all. A version-1 store (opened only to upgrade it) is checked against version 1's checksum."""
    checksum = attrs.get("checksum")
    if checksum is None:
        return [] if schema_version == 1 else [
            "attrs: the attrs checksum is missing: the attrs were edited around the EpisodeStore API (every store "
            f"of schema version {SCHEMA_VERSION} is signed)"]
    expected = (attrs_checksum_v1(attrs.get("user", {}), stored) if schema_version == 1
                else attrs_checksum(attrs))
    return [] if checksum == expected else [
        "attrs: the attrs were edited around the EpisodeStore API (their checksum no longer matches)"]
