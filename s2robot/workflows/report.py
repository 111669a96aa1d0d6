"""Reporting evaluation results: success with its Wilson interval, per-position tables, a success map over the
workspace and episode videos."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s2robot.sim.rollout import EpisodeResult


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Overall success with its Wilson 95% interval, and per-position success."""
    n, k = len(results), sum(r.success for r in results)
    lo, hi = wilson_interval(k, n)
    per_position: dict[int, dict[str, Any]] = {}
    for r in results:
        p = per_position.setdefault(r.position, {"position": r.position, "cube_xy": list(r.cube_xy),
                                                 "successes": 0, "episodes": 0, "steps_to_success": []})
        p["successes"] += int(r.success)
        p["episodes"] += 1
        if r.success:
            p["steps_to_success"].append(r.steps_to_success)
    for p in per_position.values():
        p["success_rate"] = p["successes"] / p["episodes"]
    steps = [r.steps_to_success for r in results if r.success]
    return {"success_rate": k / n if n else 0.0, "successes": k, "episodes": n, "ci95": [lo, hi],
            "median_steps_to_success": float(np.median(steps)) if steps else None,
            "per_position": [per_position[p] for p in sorted(per_position)]}


def format_table(results: Sequence[EpisodeResult], summary: dict[str, Any], label: str = "") -> str:
    """A markdown table: one row per position, then the overall rate with its interval."""
    rows = ["| pos | x [m] | y [m] | success | steps to success | max lift [cm] |", "|---|---|---|---|---|---|"]
    by_pos: dict[int, list[EpisodeResult]] = {}
    for r in results:
        by_pos.setdefault(r.position, []).append(r)
    for p, rs in sorted(by_pos.items()):
        ok = sum(r.success for r in rs)
        steps = [r.steps_to_success for r in rs if r.success]
        rows.append(f"| {p} | {rs[0].cube_xy[0]:.3f} | {rs[0].cube_xy[1]:+.3f} | {ok}/{len(rs)} | "
                    f"{np.median(steps) if steps else '-'} | {100 * max(r.max_lift for r in rs):.1f} |")
    lo, hi = summary["ci95"]
    rows.append(f"\n**success {100 * summary['success_rate']:.1f}%** ({summary['successes']}/{summary['episodes']}"
                f", Wilson 95% CI {100 * lo:.1f}–{100 * hi:.1f}%){' — ' + label if label else ''}")
    return "\n".join(rows)


def plot_success_map(results: Sequence[EpisodeResult], path: Path, title: str = "") -> Path:
    """A top view of the workspace with each position coloured by its success rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from envs import WORKSPACE  # torch-free constants; s2robot reads envs only here, for the plot frame

    summary = summarize(results)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.add_patch(plt.Rectangle((WORKSPACE.y_min, WORKSPACE.x_min), WORKSPACE.y_max - WORKSPACE.y_min,
                               WORKSPACE.x_max - WORKSPACE.x_min, fill=False, ls="--", color="0.5"))
    ys = [p["cube_xy"][1] for p in summary["per_position"]]
    xs = [p["cube_xy"][0] for p in summary["per_position"]]
    rates = [p["success_rate"] for p in summary["per_position"]]
    sc = ax.scatter(ys, xs, c=rates, cmap="RdYlGn", vmin=0, vmax=1, s=260, edgecolors="k")
    for p in summary["per_position"]:
        ax.annotate(f"{p['position']}\n{p['successes']}/{p['episodes']}", (p["cube_xy"][1], p["cube_xy"][0]),
                    ha="center", va="center", fontsize=6)
    ax.set_xlabel("y [m] (robot's left +)")
    ax.set_ylabel("x [m] (away from the robot)")
    ax.invert_xaxis()
    ax.set_aspect("equal")
    lo, hi = summary["ci95"]
    ax.set_title(f"{title}\nsuccess {100 * summary['success_rate']:.1f}% (95% CI {100 * lo:.0f}–{100 * hi:.0f}%)",
                 fontsize=8)
    fig.colorbar(sc, ax=ax, label="success rate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_episode_videos(frames: dict[int, list[np.ndarray]], results: Sequence[EpisodeResult], out: Path,
                 fps: int = 10) -> list[Path]:
    """mp4 per filmed episode, named by position, repeat and outcome; none (with a warning) without ffmpeg."""
    import importlib.util

    import imageio.v3 as iio

    if frames and importlib.util.find_spec("imageio_ffmpeg") is None:
        # Without it imageio picks another plugin by the extension and fails with an unrelated TypeError (seen
        # on a GPU machine), after results.json is written but before the table is printed.
        warnings.warn("videos skipped: imageio-ffmpeg is not installed (pip install 'imageio[ffmpeg]'); "
                      "results.json, table.md and success_map.png are written", stacklevel=2)
        return []
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, clip in sorted(frames.items()):
        r = results[k]
        path = out / f"pos{r.position:02d}_rep{r.repeat}_{'success' if r.success else 'fail'}.mp4"
        iio.imwrite(path, np.stack(clip), fps=fps, codec="libx264", macro_block_size=8)
        paths.append(path)
    return paths
