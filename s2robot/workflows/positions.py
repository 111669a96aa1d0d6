"""Evaluation cube positions (``EvalConfig.positions``, ``n_random_positions``, ``position_seed``): the paper's 16,
a ``.json``/``.csv`` file, an inline list or none, plus held-out positions from the held-out stream of
``envs.positions``; refused at the boundary unless every point is finite and inside the workspace."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _fixed_positions(spec: Any) -> tuple[Any, dict[str, Any]]:
    """The fixed set named by ``EvalConfig.positions``, unchecked, and its description."""
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        return [], {"set": "none", "source": None}
    if isinstance(spec, str) and spec == "paper":
        from envs import EVAL_POSITIONS

        return EVAL_POSITIONS, {"set": "paper", "source": "envs.EVAL_POSITIONS"}
    if isinstance(spec, str):
        return _read_positions(Path(spec)), {"set": "file", "source": str(Path(spec).resolve())}
    if isinstance(spec, Sequence):
        return spec, {"set": "list", "source": None}
    raise ValueError(f"positions must be 'paper', 'none', a .json/.csv path or a list of [x, y], got {spec!r}")


def _read_positions(path: Path) -> Any:
    if path.suffix not in (".json", ".csv"):
        raise ValueError(f"positions={str(path)!r}: a positions file must end in .json or .csv (or use 'paper', "
                         "'none' or an inline list [[x, y], ...])")
    if not path.is_file():
        raise FileNotFoundError(f"positions={str(path)!r}: no such file; give a .json/.csv of cube positions "
                                "(x, y) [m], or positions=paper")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"positions file {path} is not valid JSON: {e}") from None
        if isinstance(data, dict) and "per_position" in data:  # another evaluation's results.json
            return [p["cube_xy"] for p in data["per_position"]]
        return data.get("positions", data) if isinstance(data, dict) else data
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows = [ln.split(",") for ln in lines]
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]  # a header such as "x,y"
    try:
        return [[float(v) for v in row] for row in rows]
    except ValueError as e:
        raise ValueError(f"positions file {path}: every line must be 'x,y' in metres: {e}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_positions(value: Any, where: str) -> np.ndarray:
    """``value`` as (N, 2) float64 [m], refused unless every point is finite and inside the workspace."""
    from envs import WORKSPACE

    try:
        xy = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        xy = None
    if xy is None or xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"{where} must be a list of [x, y] pairs [m], got {value!r}")
    for i, p in enumerate(xy):
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{where}[{i}] = {p.tolist()} is not finite: give finite (x, y) in metres")
        if not WORKSPACE.contains(p):
            raise ValueError(f"{where}[{i}] = {p.tolist()} lies outside the workspace x {WORKSPACE.x_min}–"
                             f"{WORKSPACE.x_max}, y {WORKSPACE.y_min}–{WORKSPACE.y_max} [m]: give positions in metres "
                             "inside it (robot base at the origin, x away from the robot)")
    return xy


def position_set(positions: Any, n_random: int = 0, seed: int = 0) -> tuple[list[tuple[float, float]], dict[str, Any]]:
    """The cube positions in evaluation order (the fixed set ``positions`` names, then ``n_random`` held-out ones of
    ``seed``), and their description for ``results.json``: {set, source, fixed, n_random, position_seed, count}."""
    from envs import held_out_positions

    value, desc = _fixed_positions(positions)
    where = "positions" if desc["source"] is None or desc["set"] == "paper" else f"positions file {desc['source']}"
    fixed = _check_positions(value, where) if len(value) else np.zeros((0, 2))
    drawn = held_out_positions(n_random, seed)
    xy = np.concatenate([fixed, drawn])
    if len(xy) == 0:
        raise ValueError(f"positions={positions!r} with n_random_positions=0 leaves no position to evaluate: use "
                         "positions=paper, a file or list, or n_random_positions > 0")
    desc |= {"fixed": len(fixed), "n_random": n_random, "position_seed": seed if n_random else None,
             "count": len(xy)}
    return [(float(x), float(y)) for x, y in xy], desc
