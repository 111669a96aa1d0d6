"""The cube placement sheet: bounds, the 1:1 table-to-page mapping, PNG/PDF output at true size, tiling, errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s2robot.real.placement import (
    MIN_SIZE,
    placement_sheet,
    positions_table,
    sheet_bounds,
    table_to_page,
    tile_grid,
)

WORKSPACE_CORNERS = [(0.40, -0.20), (0.65, 0.20), (0.40, 0.20), (0.65, -0.20)]
A4_PT = (210 / 25.4 * 72, 297 / 25.4 * 72)  # A4 portrait (width, height) [pt]


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=float) / 255  # (H, W, 3)


def _pdf_pages(path: Path) -> list[tuple[float, float]]:
    data = path.read_bytes()
    assert len(re.findall(rb"/Type\s*/Page\b", data)) == len(re.findall(rb"/MediaBox", data))
    return [(float(w), float(h)) for w, h in re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)]


def test_sheet_bounds_contain_every_position_with_the_margin() -> None:
    """Every position lies at least ``margin`` inside the sheet, whose edges are whole centimetres."""
    xy = np.array([(0.4111, 0.1210), (0.6397, 0.1940), (0.5554, -0.1913)])
    x_min, x_max, y_min, y_max = sheet_bounds(xy, margin=0.04)
    assert x_min <= xy[:, 0].min() - 0.04 and x_max >= xy[:, 0].max() + 0.04
    assert y_min <= xy[:, 1].min() - 0.04 and y_max >= xy[:, 1].max() + 0.04
    assert (x_min, x_max, y_min, y_max) == (0.37, 0.68, -0.24, 0.24)
    small = sheet_bounds([(0.5, 0.0)], margin=0.04)  # one mark: grown to the smallest sheet about its centre
    assert small[1] - small[0] >= MIN_SIZE[0] - 1e-9 and small[3] - small[2] >= MIN_SIZE[1] - 1e-9
    assert small[0] < 0.46 and small[1] > 0.54 and small[2] == -small[3]


def test_table_to_page_is_one_to_one_with_x_up_and_y_left() -> None:
    """Points 10 cm apart land 100 mm apart; +x goes up the page (v falls), +y to the left (u falls)."""
    b = (0.36, 0.69, -0.24, 0.24)
    u0, v0 = table_to_page(0.50, 0.00, b)
    ux, vx = table_to_page(0.60, 0.00, b)
    uy, vy = table_to_page(0.50, 0.10, b)
    assert (ux - u0, vx - v0) == pytest.approx((0.0, -100.0))
    assert (uy - u0, vy - v0) == pytest.approx((-100.0, 0.0))
    assert table_to_page(0.69, 0.24, b) == pytest.approx((0.0, 0.0))  # top-left corner of the sheet
    assert table_to_page(0.36, -0.24, b) == pytest.approx((480.0, 330.0))  # bottom-right corner


def test_png_has_physical_size_times_dpi_and_records_its_dpi(tmp_path: Path) -> None:
    """A PNG of the whole sheet is (width, height) [in] × dpi pixels (within 1 px) and carries that dpi."""
    dpi = 50.0
    (path,) = placement_sheet(WORKSPACE_CORNERS, tmp_path / "sheet.png", page="none", dpi=dpi)
    x_min, x_max, y_min, y_max = sheet_bounds(WORKSPACE_CORNERS, 0.04)
    with Image.open(path) as im:
        w, h = im.size
        assert im.info["dpi"] == pytest.approx((dpi, dpi), abs=0.05)  # PNG stores whole pixels per metre
    assert abs(w - (y_max - y_min) / 0.0254 * dpi) <= 1 and abs(h - (x_max - x_min) / 0.0254 * dpi) <= 1


def test_marks_are_drawn_where_the_mapping_says(tmp_path: Path) -> None:
    """At 5 px/mm the centre of each cross is dark, and the mirror image of each mark (y → −y) is background."""
    xy = [(0.455, 0.105), (0.605, -0.095)]
    dpi = 127.0  # 5 px per mm: page millimetres map to whole pixels
    (path,) = placement_sheet(xy, tmp_path / "marks.png", page="none", dpi=dpi)
    img, b = _rgb(path), sheet_bounds(xy, 0.04)

    def pixel(x: float, y: float) -> float:
        u, v = table_to_page(x, y, b)
        return float(img[round(v * 5), round(u * 5)].mean())

    for x, y in xy:
        assert pixel(x, y) < 0.4, (x, y)
        assert pixel(x, -y) > 0.95, (x, -y)  # ≥ 3 cm from every mark, midway between grid lines
        assert min(np.hypot(x - xx, -y - yy) for xx, yy in xy) > 0.03


def test_a_sheet_larger_than_a4_is_tiled_into_a4_pngs(tmp_path: Path) -> None:
    """The workspace sheet (480 × 330 mm) on A4 portrait gives 2 × 3 PNGs, each exactly A4, overlapping by 1 cm."""
    assert tile_grid((480.0, 330.0), (210.0, 297.0), 10.0) == (2, 3)
    assert tile_grid((410.0, 297.0), (210.0, 297.0), 10.0) == (1, 2)  # 2 pages span 2 × 210 − 10 mm
    assert tile_grid((411.0, 297.0), (210.0, 297.0), 10.0) == (1, 3)
    paths = placement_sheet(WORKSPACE_CORNERS, tmp_path / "ws.png", page="A4", dpi=50.8)  # 2 px per mm
    assert [p.name for p in paths] == [f"ws_r{r}c{c}.png" for r in (1, 2) for c in (1, 2, 3)]
    tiles = [_rgb(p) for p in paths]
    assert all(t.shape == (594, 420, 3) for t in tiles)
    # The right 10 mm of tile (1, 1) is the left 10 mm of tile (1, 2); its bottom 10 mm the top of tile (2, 1)
    # (above the tile label, 8 mm from the top).
    np.testing.assert_allclose(tiles[0][:, 400:420], tiles[1][:, 0:20], atol=0.02)
    np.testing.assert_allclose(tiles[0][574:590], tiles[3][0:16], atol=0.02)
    red = tiles[0][..., 0] - tiles[0][..., 1] > 0.1  # the red alignment lines, in the middle of each overlap
    assert red[100:500, 409:411].any(axis=1).all() and red[583:585, 100:300].any(axis=0).all()


def test_pdf_has_one_a4_page_per_tile(tmp_path: Path) -> None:
    """The tiled PDF has R × C pages of A4; landscape A4 needs 2 × 2; a small sheet fits one page."""
    (path,) = placement_sheet(WORKSPACE_CORNERS, tmp_path / "ws.pdf", page="A4")
    assert _pdf_pages(path) == [pytest.approx(A4_PT, abs=0.01)] * 6
    (path,) = placement_sheet(WORKSPACE_CORNERS, tmp_path / "wl.pdf", page="A4", landscape=True)
    assert _pdf_pages(path) == [pytest.approx(A4_PT[::-1], abs=0.01)] * 4
    (path,) = placement_sheet([(0.5, 0.0), (0.55, 0.05)], tmp_path / "one.pdf", page="A4")
    assert len(_pdf_pages(path)) == 1


def test_positions_table_lists_labels_and_centimetres() -> None:
    """One row per mark with its label and x, y in cm; default labels count from 1."""
    rows = positions_table([(0.5417, -0.0277), (0.4235, 0.0608)]).splitlines()
    assert rows[0].split() == ["label", "x", "[cm]", "y", "[cm]"]
    assert rows[1].split() == ["1", "54.17", "-2.77"] and rows[2].split() == ["2", "42.35", "6.08"]
    assert positions_table([(0.5, 0.0)], labels=["h1"]).splitlines()[1].split()[0] == "h1"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"positions": []}, "empty"),
    ({"positions": [(0.5, float("nan"))]}, "finite"),
    ({"positions": [(0.5, 0.0, 0.1)]}, "shape"),
    ({"page": "A5"}, "A4, A3, letter, none"),
    ({"labels": ["a", "b"]}, "labels"),
    ({"out": "sheet.svg"}, ".pdf or .png"),
    ({"margin": 0.01}, "margin"),
])
def test_bad_input_raises_value_error(tmp_path: Path, kwargs: dict, message: str) -> None:
    """Empty or non-finite positions, an unknown page, wrong labels, suffix or margin: ValueError saying so."""
    args = {"positions": [(0.5, 0.0)], "out": "sheet.png", **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        placement_sheet(args.pop("positions"), tmp_path / args.pop("out"), **args)
    assert not list(tmp_path.iterdir())
