"""A printable cube placement sheet at 1:1 scale, to tape to the table in the robot base frame.

Orientation: the robot base lies beyond the bottom edge of the sheet; x (forward) points up the page and y (left)
points to the left of the page, as seen from above by someone standing behind the robot. Page coordinates are
millimetres from the sheet's top-left corner, u to the right and v down: u = 1000 (y_max − y), v = 1000 (x_max − x).
Matplotlib draws in (X, Y) = (−y, x) [m], with axes that fill a figure of the same physical size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

PAGES_MM: dict[str, tuple[float, float]] = {"A4": (210.0, 297.0), "A3": (297.0, 420.0), "letter": (215.9, 279.4)}
PAGE_NAMES = (*PAGES_MM, "none")  # "none": one page the size of the drawing
MM_PER_INCH = 25.4
MIN_SIZE = (0.12, 0.20)  # smallest sheet (along x, along y) [m]: room for the title, scale bar and origin arrow
_MM = 1e-3  # [m]

Bounds = tuple[float, float, float, float]  # (x_min, x_max, y_min, y_max) [m]
Segment = list[tuple[float, float]]  # a polyline in drawing coordinates (X, Y) = (−y, x) [m]


def _as_positions(positions: Sequence[tuple[float, float]] | np.ndarray) -> np.ndarray:
    """The positions as a finite (N, 2) float array [m]; ValueError otherwise."""
    xy = np.asarray(positions, dtype=float)
    if xy.size == 0:
        raise ValueError("positions is empty: give at least one (x, y) cube position [m]")
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"positions must be a sequence of (x, y) pairs [m], got an array of shape {xy.shape}")
    if not np.isfinite(xy).all():
        raise ValueError(f"positions must be finite, got {xy[~np.isfinite(xy).all(axis=1)].tolist()}")
    return xy


def _cm_floor(v: float) -> float:
    return math.floor(round(v * 100, 6)) / 100


def _cm_ceil(v: float) -> float:
    return math.ceil(round(v * 100, 6)) / 100


def sheet_bounds(positions: Sequence[tuple[float, float]] | np.ndarray, margin: float = 0.04) -> Bounds:
    """The sheet's extent (x_min, x_max, y_min, y_max) [m]: every position plus ``margin`` [m] on each side, rounded
    outwards to whole centimetres (so the edges lie on grid lines) and grown about the centre to at least MIN_SIZE."""
    xy = _as_positions(positions)
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite length >= 0 [m], got {margin}")
    lo, hi = xy.min(axis=0) - margin, xy.max(axis=0) + margin
    out = []
    for axis in range(2):
        a, b = lo[axis], hi[axis]
        if b - a < MIN_SIZE[axis]:
            a, b = (a + b - MIN_SIZE[axis]) / 2, (a + b + MIN_SIZE[axis]) / 2
        out += [_cm_floor(a), _cm_ceil(b)]
    return out[0], out[1], out[2], out[3]


def table_to_page(x: float | np.ndarray, y: float | np.ndarray,
                  bounds: Bounds) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Page coordinates (u, v) [mm] of the table point (x, y) [m]: from the sheet's top-left corner, u to the right
    and v down; x points up the page and y to the left, at 1:1 scale."""
    _, x_max, _, y_max = bounds
    return 1000.0 * (y_max - y), 1000.0 * (x_max - x)


def tile_grid(sheet_mm: tuple[float, float], page_mm: tuple[float, float], overlap_mm: float) -> tuple[int, int]:
    """(rows, cols) of pages (width, height) [mm] overlapping by ``overlap_mm`` that cover a sheet (width, height)."""
    def count(sheet: float, page: float) -> int:
        return 1 if sheet <= page + 1e-6 else math.ceil((sheet - overlap_mm) / (page - overlap_mm) - 1e-9)
    return count(sheet_mm[1], page_mm[1]), count(sheet_mm[0], page_mm[0])


def positions_table(positions: Sequence[tuple[float, float]] | np.ndarray,
                    labels: Sequence[str] | None = None) -> str:
    """A plain-text table of the marks: label, x [cm], y [cm] in the robot base frame, one row per position."""
    xy = _as_positions(positions)
    names = _labels(labels, len(xy))
    width = max(5, *(len(n) for n in names))
    rows = [f"{'label':<{width}}  {'x [cm]':>8}  {'y [cm]':>8}"]
    rows += [f"{n:<{width}}  {100 * x:8.2f}  {100 * y:8.2f}" for n, (x, y) in zip(names, xy, strict=True)]
    return "\n".join(rows)


def _labels(labels: Sequence[str] | None, n: int) -> list[str]:
    if labels is None:
        return [str(k + 1) for k in range(n)]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} positions: give one label per position, or none")
    return [str(s) for s in labels]


def _cm(v: float) -> str:
    return f"{v:.0f}".replace("-", "−")


def _draw_sheet(ax: Axes, xy: np.ndarray, names: list[str], b: Bounds, cube_size: float, seams: list[Segment]) -> None:
    """Everything on the sheet, in (X, Y) = (−y, x) [m]: grid, marks, axes, origin, scale bar, notes, seams."""
    x_min, x_max, y_min, y_max = b
    kx = range(round(x_min * 100), round(x_max * 100) + 1)  # grid lines [cm]
    ky = range(round(y_min * 100), round(y_max * 100) + 1)
    for major in (False, True):  # 1 cm light, 5 cm darker, the line y = 0 darkest
        segs = [[(-y_max, k / 100), (-y_min, k / 100)] for k in kx if (k % 5 == 0) == major]
        segs += [[(-k / 100, x_min), (-k / 100, x_max)] for k in ky if (k % 5 == 0) == major]
        ax.add_collection(LineCollection(segs, colors="0.55" if major else "0.82", linewidths=0.6 if major else 0.3))
    if y_min <= 0 <= y_max:
        ax.plot([0, 0], [x_min, x_max], color="0.3", lw=0.9)
    for k in (k for k in kx if k % 5 == 0):
        ax.text(-y_max + 1 * _MM, k / 100 + 0.5 * _MM, f"x {_cm(k)}", fontsize=5.5, color="0.3", va="bottom")
        ax.text(-y_min - 1 * _MM, k / 100 + 0.5 * _MM, f"x {_cm(k)}", fontsize=5.5, color="0.3", va="bottom",
                ha="right")
    for k in (k for k in ky if k % 5 == 0):
        ax.text(-k / 100 + 0.7 * _MM, x_min + 1 * _MM, f"y {_cm(k)}", fontsize=5.5, color="0.3", va="bottom")
    ax.add_patch(Rectangle((-y_max, x_min), y_max - y_min, x_max - x_min, fill=False, lw=0.8, ec="black"))
    h, c = cube_size / 2, cube_size / 4
    for name, (x, y) in zip(names, xy, strict=True):  # the cube's outline, a cross at its centre, its label
        ax.add_patch(Rectangle((-y - h, x - h), cube_size, cube_size, fill=False, lw=0.8, ec="black"))
        ax.plot([-y - c, -y + c], [x, x], color="black", lw=1.0)
        ax.plot([-y, -y], [x - c, x + c], color="black", lw=1.0)
        ax.text(-y + h + 1 * _MM, x + h, name, fontsize=9, weight="bold", ha="left", va="top")
    # Notes along the top edge: what the sheet is, the frame, and the scale check (a 10 cm bar).
    left, n = -y_max + 8 * _MM, len(xy)
    ax.text(left, x_max - 3 * _MM, f"s2robot cube placement sheet: {n} position{'s' * (n != 1)}, "
            f"{100 * cube_size:.1f} cm cube, print at 1:1 (actual size)", fontsize=8.5, weight="bold", va="top")
    ax.text(left, x_max - 8 * _MM, "x forward, y left, robot base frame; grid 1 cm, labels in cm",
            fontsize=7, va="top")
    bar_y = x_max - 15 * _MM
    ax.plot([left, left + 0.1], [bar_y, bar_y], color="black", lw=2.0, solid_capstyle="butt")
    for end in (left, left + 0.1):
        ax.plot([end, end], [bar_y - 2 * _MM, bar_y + 2 * _MM], color="black", lw=0.6)
    ax.text(left + 0.1 + 3 * _MM, bar_y, "this bar must measure 10.0 cm", fontsize=7, va="center")
    # Axis directions in the bottom-right corner.
    base, arrow = (-y_min - 8 * _MM, x_min + 8 * _MM), {"arrowstyle": "->", "lw": 1.0}
    ax.annotate("", xy=(base[0], base[1] + 15 * _MM), xytext=base, arrowprops=arrow)
    ax.annotate("", xy=(base[0] - 15 * _MM, base[1]), xytext=base, arrowprops=arrow)
    ax.text(base[0] - 15 * _MM, base[1] + 1 * _MM, "+y", fontsize=7, ha="right", va="center")
    ax.text(base[0], base[1] + 16 * _MM, "+x", fontsize=7, ha="center", va="bottom")
    _draw_origin(ax, b)
    for seg in seams:  # mid-overlap alignment lines, identical on both neighbouring tiles (solid: dashes would not be)
        ax.plot(*zip(*seg, strict=True), color="tab:red", lw=0.8)


def _draw_origin(ax: Axes, b: Bounds) -> None:
    """The robot base origin: a marker if it lies on the sheet, else an arrow at the nearest edge pointing at it."""
    x_min, x_max, y_min, y_max = b
    ex, ey = min(max(0.0, x_min), x_max), min(max(0.0, y_min), y_max)  # nearest sheet point [m]
    if (ex, ey) == (0.0, 0.0):
        ax.plot([0], [0], marker="+", ms=14, mew=1.2, color="black")
        ax.text(3 * _MM, 3 * _MM, "robot base origin (0, 0)", fontsize=7)
        return
    parts = [f"{100 * abs(d):.1f} cm along {name}" for d, name in
             ((ex, "−x" if ex > 0 else "+x"), (ey, "−y" if ey > 0 else "+y")) if d != 0]
    text = " and ".join(parts).replace(" along", " this way along", 1)
    d = np.array([ey, -ex]) / math.hypot(ex, ey)  # unit vector towards the origin, in (X, Y)
    tip = np.array([-ey, ex]) - 1 * _MM * d  # just inside the edge
    tail = tip - 15 * _MM * d
    ax.annotate("", xy=tuple(tip), xytext=tuple(tail), arrowprops={"arrowstyle": "-|>", "lw": 1.2, "color": "black"})
    ax.text(tail[0] + 2 * _MM, tail[1], f"robot base origin (0, 0): {text} (from the sheet's edge)",
            fontsize=7, va="center")


def _page_mm(page: str, sheet_mm: tuple[float, float], landscape: bool) -> tuple[float, float]:
    if page == "none":
        return sheet_mm
    if page not in PAGES_MM:
        raise ValueError(f"unknown page {page!r}: use one of {', '.join(PAGE_NAMES)}")
    w, h = PAGES_MM[page]
    return (h, w) if landscape else (w, h)


def placement_sheet(positions: Sequence[tuple[float, float]] | np.ndarray, out: str | Path, *,
                    labels: Sequence[str] | None = None, margin: float = 0.04, page: str = "A4",
                    cube_size: float = 0.04, dpi: float = 200.0, overlap: float = 0.01,
                    landscape: bool = False) -> list[Path]:
    """Draw the cube marks at ``positions`` (N, 2) [m] at 1:1 scale and write the sheet to ``out`` (.pdf or .png).

    margin: space around the outermost positions [m], at least half the cube; cube_size: the cube's edge [m];
    page: "A4", "A3", "letter" (portrait unless ``landscape``) or "none" (one page the drawing's size);
    dpi: PNG resolution [1/inch], written into the file; overlap: between neighbouring tiles [m].
    A sheet larger than the page is split into R×C tiles of exactly the page size: one PDF with a page per tile
    (row by row), or one PNG per tile named ``<stem>_r{r}c{c}.png`` (1-based). Returns the paths written.
    """
    xy, out = _as_positions(positions), Path(out)
    names = _labels(labels, len(xy))
    if out.suffix.lower() not in (".pdf", ".png"):
        raise ValueError(f"out must end in .pdf or .png, got {str(out)!r}")
    if not (np.isfinite(cube_size) and cube_size > 0 and np.isfinite(margin) and margin >= cube_size / 2):
        raise ValueError(f"need cube_size > 0 and margin >= cube_size / 2 [m], got {cube_size=}, {margin=}")
    if not (np.isfinite(dpi) and dpi > 0):
        raise ValueError(f"dpi must be > 0, got {dpi}")
    b = sheet_bounds(xy, margin)
    sheet_mm = (1000 * (b[3] - b[2]), 1000 * (b[1] - b[0]))  # (width, height)
    page_mm, o = _page_mm(page, sheet_mm, landscape), 1000 * overlap
    if not 0 <= o < min(page_mm) / 2:
        raise ValueError(f"overlap must be >= 0 and under half the page [m], got {overlap}")
    rows, cols = tile_grid(sheet_mm, page_mm, o)
    step = (page_mm[0] - o, page_mm[1] - o)  # tile origin pitch on the sheet [mm]
    # Seams in the middle of each overlap strip, in (X, Y) [m]: X = u/1000 − y_max, Y = x_max − v/1000.
    seams = [[(_MM * (c * step[0] + o / 2) - b[3], b[0]), (_MM * (c * step[0] + o / 2) - b[3], b[1])]
             for c in range(1, cols)]
    seams += [[(-b[3], b[1] - _MM * (r * step[1] + o / 2)), (-b[2], b[1] - _MM * (r * step[1] + o / 2))]
              for r in range(1, rows)]
    figs = []
    for r in range(rows):
        for c in range(cols):
            fig = Figure(figsize=(page_mm[0] / MM_PER_INCH, page_mm[1] / MM_PER_INCH), dpi=dpi)
            ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
            ax.set_axis_off()
            u0, v0 = c * step[0], r * step[1]
            ax.set_xlim(_MM * u0 - b[3], _MM * (u0 + page_mm[0]) - b[3])
            ax.set_ylim(b[1] - _MM * (v0 + page_mm[1]), b[1] - _MM * v0)
            ax.set_aspect("equal", adjustable="box")
            _draw_sheet(ax, xy, names, b, cube_size, seams)
            if rows * cols > 1:
                fig.text(0.5, 1 - 8 / page_mm[1], f"tile {r + 1},{c + 1} of {rows}×{cols} (overlap {o / 10:.1f} cm, "
                         "align the red lines and the grid)", fontsize=6, color="tab:red", ha="center",
                         va="top")
            figs.append(((r, c), fig))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".pdf":
        with PdfPages(out, metadata={"Title": "s2robot cube placement sheet (1:1)"}) as pdf:
            for _, fig in figs:
                pdf.savefig(fig)
        return [out]
    paths = []
    for (r, c), fig in figs:
        path = out if len(figs) == 1 else out.with_name(f"{out.stem}_r{r + 1}c{c + 1}{out.suffix}")
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths
