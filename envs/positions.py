"""Where cubes go: the workspace, the paper's 16 evaluation positions, and the seeded streams that place demo
and held-out evaluation cubes so that no demo cube can ever coincide with an evaluation cube.

Three sets of cube positions, kept apart by construction (not by luck: 5000 independent uniform draws would
put ~2.5 cubes within 1 mm of the 16 paper positions):

- the paper's ``EVAL_POSITIONS``: 16 frozen points at 0.1 mm resolution;
- demo cubes (``CubePickEnv.reset(seed=s)`` without ``cube_xy``; the recorder uses s = first_seed + k): drawn
  from the ``DEMO_STREAM`` of seed s, on the even-millimetre lattice (x and y both even multiples of 1 mm);
- held-out evaluation cubes (``held_out_positions(n, seed)``, ``scripts/eval.py n_random_positions=``): drawn
  from the ``HELD_OUT_STREAM``, on the odd-millimetre lattice (x and y both odd multiples of 1 mm).

A demo cube and a held-out cube are therefore ≥ √2 mm apart, and both lattices leave out every point within
``MIN_SEPARATION`` of a paper position. Each stream is ``SeedSequence(seed, spawn_key=(tag,))``, never the plain
``default_rng(seed)`` the paper positions came from (seed 16), so no seed of one stream replays another's draw.
The lattices are far finer than anything a policy sees (a camera pixel spans ~3 mm of table, the cube 40 mm).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

# The stream tags (spawn keys), in this one place: ASCII "demo" and "hold", far from the small integers that
# SeedSequence.spawn hands out as spawn keys, so no spawned child stream can equal one of them.
DEMO_STREAM = 0x64656D6F
HELD_OUT_STREAM = 0x686F6C64
MIN_SEPARATION = 1e-3  # no demo or held-out cube lies closer than this to a paper evaluation position [m]
_LATTICE_MM = 1e-3  # lattice unit [m]: demo cubes on even multiples, held-out cubes on odd ones


@dataclass(frozen=True)
class Workspace:
    """Axis-aligned rectangle on the table where cubes are placed [m], robot base at the origin."""

    x_min: float
    x_max: float
    y_min: float
    y_max: float

    def contains(self, xy: tuple[float, float] | np.ndarray) -> bool:
        """Whether the point ``xy`` (2,) [m] lies in the rectangle (edges included)."""
        x, y = float(xy[0]), float(xy[1])
        return self.x_min <= x <= self.x_max and self.y_min <= y <= self.y_max


# In front of the robot and in full view of the `front` camera. The scripted expert also picks cubes
# 5 cm beyond every edge (x 0.30-0.70, y ±0.25), so the whole rectangle is comfortably reachable.
WORKSPACE = Workspace(x_min=0.40, x_max=0.65, y_min=-0.20, y_max=0.20)

# The 16 evaluation cube positions (x, y) [m]: drawn once, uniformly over WORKSPACE, with
# `np.random.default_rng(16).uniform((0.40, -0.20), (0.65, 0.20), size=(16, 2)).round(4)`, and frozen
# here so that every evaluation, whatever numpy does in the future, uses exactly the same positions.
EVAL_POSITIONS: tuple[tuple[float, float], ...] = (
    (0.5417, -0.0277),
    (0.4235, -0.0608),
    (0.5554, -0.1913),
    (0.6187, 0.1416),
    (0.4111, 0.1210),
    (0.4462, 0.0782),
    (0.4388, 0.0766),
    (0.6397, 0.1940),
    (0.5658, -0.1346),
    (0.4987, -0.0888),
    (0.6389, -0.0803),
    (0.5403, -0.0371),
    (0.4347, -0.0461),
    (0.5924, -0.0346),
    (0.5698, 0.0327),
    (0.4191, 0.0920),
)


def cube_rng(seed: int, stream: int) -> np.random.Generator:
    """The generator of ``stream`` (DEMO_STREAM or HELD_OUT_STREAM) for ``seed`` (an int ≥ 0)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


@functools.cache
def _lattice(odd: bool) -> np.ndarray:
    """Points of WORKSPACE whose x and y [mm] are both odd (or both even), none within MIN_SEPARATION of a paper
    position: (P, 2) [m], x-major, read-only."""
    def axis(lo: float, hi: float) -> np.ndarray:  # the integer millimetres in [lo, hi] of the right parity
        first = math.ceil(lo / _LATTICE_MM - 1e-9)
        first += (first % 2) != int(odd)
        return np.arange(first, math.floor(hi / _LATTICE_MM + 1e-9) + 1, 2)

    xs, ys = axis(WORKSPACE.x_min, WORKSPACE.x_max), axis(WORKSPACE.y_min, WORKSPACE.y_max)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2) * _LATTICE_MM  # (P, 2)
    gap = np.linalg.norm(grid[:, None] - np.asarray(EVAL_POSITIONS)[None], axis=-1).min(axis=1)  # (P,)
    points = grid[gap >= MIN_SEPARATION]
    points.flags.writeable = False
    return points


def demo_cube_xy(seed: int) -> np.ndarray:
    """The cube position (2,) [m] of demo seed ``seed``: uniform over the even-millimetre lattice of WORKSPACE."""
    points = _lattice(odd=False)
    return points[cube_rng(seed, DEMO_STREAM).integers(len(points))].copy()


def held_out_positions(n: int, seed: int) -> np.ndarray:
    """``n`` distinct held-out evaluation positions (n, 2) [m] of ``seed``: uniform over the odd-millimetre
    lattice of WORKSPACE, without replacement. The first k of ``held_out_positions(n, s)`` do not depend on n."""
    points = _lattice(odd=True)
    if not (isinstance(n, int | np.integer) and 0 <= n <= len(points)):
        raise ValueError(f"the number of held-out positions must be an int in [0, {len(points)}], got {n!r}")
    if not (isinstance(seed, int | np.integer) and seed >= 0):
        raise ValueError(f"the held-out position seed must be an int ≥ 0, got {seed!r}")
    rng = cube_rng(int(seed), HELD_OUT_STREAM)
    return points[rng.permutation(len(points))[:n]].copy()
