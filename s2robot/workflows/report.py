"""Reporting evaluation results: success with its Wilson interval, failure modes, per-position tables (with the
distance to the nearest training cube), a success map over the workspace and episode videos."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s2robot.common.timing import combine_round_trips
from s2robot.sim.rollout import FAILURE_MODES, EpisodeResult

# How each failure mode is drawn on the success map: (marker, colour).
MODE_STYLE = {"missed_grasp": ("x", "tab:red"), "dropped": ("v", "tab:purple"),
              "lifted_too_little": ("^", "tab:orange"), "timeout": ("s", "tab:gray")}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def nearest_distances(points: Sequence[Sequence[float]], demos: np.ndarray) -> list[float]:
    """For each point (x, y) [m], the distance to the nearest of ``demos`` (M, 2) [m] (M ≥ 1)."""
    xy, demos = np.asarray(points, float).reshape(-1, 2), np.asarray(demos, float).reshape(-1, 2)
    return np.linalg.norm(xy[:, None] - demos[None], axis=-1).min(axis=1).tolist()  # (N, M) -> (N,)


def failure_counts(results: Sequence[EpisodeResult]) -> dict[str, int]:
    """{failure mode: episodes}, every mode of FAILURE_MODES listed (0 when none)."""
    return {m: sum(r.failure_mode == m for r in results) for m in FAILURE_MODES}


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Overall success with its Wilson 95% interval, failure-mode counts, and per position: success, failure modes
    and the distance to the nearest training cube [m] (None when unknown); with a remote policy server, the round
    trip's p50/p99/max over every step (``round_trip``)."""
    n, k = len(results), sum(r.success for r in results)
    lo, hi = wilson_interval(k, n)
    by_pos: dict[int, list[EpisodeResult]] = {}
    for r in results:
        by_pos.setdefault(r.position, []).append(r)
    per_position = [{"position": p, "cube_xy": list(rs[0].cube_xy), "successes": sum(r.success for r in rs),
                     "episodes": len(rs), "success_rate": sum(r.success for r in rs) / len(rs),
                     "steps_to_success": [r.steps_to_success for r in rs if r.success],
                     "failure_modes": {m: c for m, c in failure_counts(rs).items() if c},
                     "nearest_demo": rs[0].nearest_demo} for p, rs in sorted(by_pos.items())]
    steps = [r.steps_to_success for r in results if r.success]
    remote = [r.round_trip for r in results if r.round_trip is not None]
    return {"success_rate": k / n if n else 0.0, "successes": k, "episodes": n, "ci95": [lo, hi],
            "median_steps_to_success": float(np.median(steps)) if steps else None,
            "failure_modes": failure_counts(results), "per_position": per_position,
            **({"round_trip": combine_round_trips(remote)} if remote else {})}


def set_summaries(results: Sequence[EpisodeResult], positions: dict[str, Any]) -> list[dict[str, Any]]:
    """Success with its Wilson interval of each position set evaluated: the fixed set (``positions["set"]``, e.g.
    ``paper``: positions 0 .. fixed-1) and the held-out random positions after it, when there are any."""
    n_fixed = int(positions.get("fixed", 0))
    parts = [(str(positions.get("set", "fixed")), [r for r in results if r.position < n_fixed]),
             (f"held-out ({positions.get('n_random', 0)} random, seed {positions.get('position_seed')})",
              [r for r in results if r.position >= n_fixed])]
    out = []
    for name, rs in parts:
        if rs:
            k = sum(r.success for r in rs)
            out.append({"set": name, "positions": len({r.position for r in rs}), "successes": k, "episodes": len(rs),
                        "success_rate": k / len(rs), "ci95": list(wilson_interval(k, len(rs)))})
    return out


def format_sets(sets: Sequence[dict[str, Any]]) -> str:
    """One line per position set: ``paper: 45/48 = 93.8% (Wilson 95% CI 83.2–97.9%, 16 positions)``."""
    return "\n".join(f"{s['set']}: {s['successes']}/{s['episodes']} = {100 * s['success_rate']:.1f}% (Wilson 95% CI "
                     f"{100 * s['ci95'][0]:.1f}–{100 * s['ci95'][1]:.1f}%, {s['positions']} positions)" for s in sets)


def format_table(results: Sequence[EpisodeResult], summary: dict[str, Any], label: str = "") -> str:
    """A markdown table: one row per position (failure mode per failed repeat, distance to the nearest training
    cube), then the overall rate with its interval and the failure-mode counts."""
    rows = ["| pos | x [m] | y [m] | nearest demo [cm] | success | failures (repeat: mode) | steps to success | "
            "max lift [cm] |", "|---|---|---|---|---|---|---|---|"]
    by_pos: dict[int, list[EpisodeResult]] = {}
    for r in results:
        by_pos.setdefault(r.position, []).append(r)
    for p, rs in sorted(by_pos.items()):
        ok = sum(r.success for r in rs)
        steps = [r.steps_to_success for r in rs if r.success]
        near = f"{100 * rs[0].nearest_demo:.1f}" if rs[0].nearest_demo is not None else "-"
        modes = ", ".join(f"{r.repeat}: {r.failure_mode}" for r in rs if not r.success) or "-"
        rows.append(f"| {p} | {rs[0].cube_xy[0]:.3f} | {rs[0].cube_xy[1]:+.3f} | {near} | {ok}/{len(rs)} | {modes} | "
                    f"{np.median(steps) if steps else '-'} | {100 * max(r.max_lift for r in rs):.1f} |")
    lo, hi = summary["ci95"]
    rows.append(f"\n**success {100 * summary['success_rate']:.1f}%** ({summary['successes']}/{summary['episodes']}"
                f", Wilson 95% CI {100 * lo:.1f}–{100 * hi:.1f}%){' — ' + label if label else ''}")
    if len(summary.get("sets", [])) > 1:
        rows.append("\n" + format_sets(summary["sets"]))
    counts = summary["failure_modes"]
    rows.append(f"\nfailures: {', '.join(f'{m} {c}' for m, c in counts.items())} "
                f"({sum(counts.values())} of {summary['episodes']} episodes)")
    return "\n".join(rows)


def plot_success_map(results: Sequence[EpisodeResult], path: Path, title: str = "") -> Path:
    """A top view of the workspace with each position coloured by its success rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from envs import WORKSPACE  # torch-free constants; s2robot reads envs only here, for the plot frame

    summary = summarize(results)
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    ax.add_patch(plt.Rectangle((WORKSPACE.y_min, WORKSPACE.x_min), WORKSPACE.y_max - WORKSPACE.y_min,
                               WORKSPACE.x_max - WORKSPACE.x_min, fill=False, ls="--", color="0.5"))
    ys = [p["cube_xy"][1] for p in summary["per_position"]]
    xs = [p["cube_xy"][0] for p in summary["per_position"]]
    rates = [p["success_rate"] for p in summary["per_position"]]
    sc = ax.scatter(ys, xs, c=rates, cmap="RdYlGn", vmin=0, vmax=1, s=260, edgecolors="k")
    for p in summary["per_position"]:
        ax.annotate(f"{p['position']}\n{p['successes']}/{p['episodes']}", (p["cube_xy"][1], p["cube_xy"][0]),
                    ha="center", va="center", fontsize=6)
    # Each failed episode as a small marker (shape and colour by failure mode) on a ring around its position.
    repeats = max(r.repeat for r in results) + 1 if results else 1
    for mode, (marker, colour) in MODE_STYLE.items():
        failed = [r for r in results if r.failure_mode == mode]
        angle = [2 * np.pi * (r.repeat + 0.5) / repeats for r in failed]
        ax.scatter([r.cube_xy[1] + 0.014 * np.cos(a) for r, a in zip(failed, angle, strict=True)],
                   [r.cube_xy[0] + 0.014 * np.sin(a) for r, a in zip(failed, angle, strict=True)],
                   marker=marker, color=colour, s=14, linewidths=1, zorder=3, label=f"{mode} ({len(failed)})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=6, frameon=False)
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


def write_episode_videos(frames: dict[int, list[np.ndarray]],
                         results: Sequence[EpisodeResult] | Mapping[int, EpisodeResult], out: Path, fps: int = 10
                         ) -> list[Path]:
    """mp4 per filmed episode (``frames``' keys index ``results``), named by position, repeat and outcome; none (with a
    warning) without ffmpeg."""
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
