"""Other projects' datasets as episode sources: what a reader of LeRobot, Diffusion Policy or robomimic data gives
the importer (``s2robot.data.importer``), whatever the format on disk.

A reader opens its dataset lazily and hands out one episode at a time, with the source's own column names; the
``KeyMap`` says which of those columns become the store's ``proprio``, ``action`` and ``rgb_<camera>`` keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass
class KeyMap:
    """Which source columns become which store keys.

    proprio: columns concatenated (in this order) along the last axis into ``proprio`` (T, P) float32
    action: the column that becomes ``action`` (T, A) float32
    cameras: store camera name -> source column of (T, H, W, 3) uint8 frames (``rgb_<camera>``)
    """

    proprio: list[str]
    action: str
    cameras: dict[str, str]

    def source_keys(self) -> list[str]:
        """Every source column the map reads."""
        return [*self.proprio, self.action, *self.cameras.values()]


@dataclass
class SourceEpisode:
    """One episode as its source stores it: column name -> (T, ...) array (frames (T, H, W, 3) uint8), its task
    string when the format has one, and JSON-able per-episode info (e.g. the source's episode index)."""

    data: dict[str, np.ndarray]
    task: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


class EpisodeSource(Protocol):
    """A dataset of another project, opened for reading. ``keys`` lists every per-step column with its per-step
    dtype and shape (frames: ``(H, W, 3)`` uint8); ``episode(i, keys)`` reads only ``keys`` (default all), so an
    import decodes no video it does not map; ``default_map`` is the format's usual key map; ``describe`` is
    JSON-able provenance (format, path, version, fps, ...) recorded in the imported store's attrs."""

    format: str
    path: Path

    def __len__(self) -> int: ...

    def keys(self) -> Mapping[str, tuple[np.dtype, tuple[int, ...]]]: ...

    def episode(self, i: int, keys: Sequence[str] | None = None) -> SourceEpisode: ...

    def default_map(self) -> KeyMap: ...

    def describe(self) -> dict[str, Any]: ...
