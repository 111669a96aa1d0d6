"""The robustness report: per condition the success with its Wilson interval and the paired difference from clean
(cube positions resampled), as a markdown table, a chart, and a grid of what the policy camera sees."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from s2robot.sim.env import EnvConfig, make_env
from s2robot.sim.rollout import Episode
from s2robot.workflows.paired import compare_evaluations
from s2robot.workflows.report import wilson_interval


def condition_rows(results: Mapping[str, Mapping[str, Any]], clean: Mapping[str, Any],
                   expert: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per condition (in ``results`` order): its success, Wilson interval, failure modes, the expert's
    success where run, and (but for clean) the paired difference from ``clean`` with both 95% intervals."""
    rows = []
    for spec, r in results.items():
        k, n = int(r["successes"]), int(r["episodes"])
        row: dict[str, Any] = {"condition": spec, "successes": k, "episodes": n, "success_rate": k / n if n else 0.0,
                               "ci95": list(wilson_interval(k, n)),
                               "failure_modes": {m: c for m, c in r["failure_modes"].items() if c},
                               "expert_success_rate": (expert or {}).get(spec)}
        if spec != "none":
            c = compare_evaluations(r, clean, spec, "clean")
            row["paired"] = {k2: v for k2, v in asdict(c).items() if k2 not in ("label_a", "label_b")}
        rows.append(row)
    return rows


def _rate(row: Mapping[str, Any]) -> str:
    lo, hi = row["ci95"]
    return f"{row['successes']}/{row['episodes']} = {100 * row['success_rate']:.1f}% [{100 * lo:.0f}–{100 * hi:.0f}]"


def _delta(row: Mapping[str, Any]) -> str:
    p = row.get("paired")
    if p is None:
        return "—"
    lo, hi = p["ci95_positions"]
    mark = " **worse**" if hi < 0 else (" **better**" if lo > 0 else "")
    return f"{100 * p['difference']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f}){mark}"


def format_robustness(rows: Sequence[Mapping[str, Any]], label: str = "") -> str:
    """Markdown: a row per condition, then the mean over the single factors at each level and the weakest one."""
    lines = ["| condition | success [Wilson 95% CI] | Δ vs clean, points (paired 95% CI, positions resampled) | "
             "failures | expert |", "|---|---|---|---|---|"]
    for r in rows:
        fails = ", ".join(f"{m} {c}" for m, c in r["failure_modes"].items()) or "—"
        exp = "—" if r["expert_success_rate"] is None else f"{100 * r['expert_success_rate']:.0f}%"
        name = "clean (the scene as built)" if r["condition"] == "none" else r["condition"]
        lines.append(f"| {name} | {_rate(r)} | {_delta(r)} | {fails} | {exp} |")
    singles = [r for r in rows if r["condition"] != "none" and "+" not in r["condition"]
               and r["condition"].split(":")[0] not in ("visual", "physical", "all")]
    for level in sorted({r["condition"].split(":")[1] for r in singles}):
        at = [r for r in singles if r["condition"].endswith(f":{level}")]
        worst = min(at, key=lambda r: r["success_rate"])
        mean = 100 * np.mean([r["success_rate"] for r in at])
        lines.append(f"\n- single factors at `{level}`: mean success {mean:.1f}% over {len(at)} factors; weakest "
                     f"`{worst['condition']}` {_rate(worst)}")
    if label:
        lines.append(f"\npolicy: {label}; every condition runs the same episodes (cubes, seeds, arm start noise)")
    return "\n".join(lines)


def plot_robustness(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """Two panels, one bar per condition: success with its Wilson interval; the paired difference from clean with
    its positions-resampled interval (red where the interval is below 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["clean" if r["condition"] == "none" else r["condition"] for r in rows]
    y = np.arange(len(rows))[::-1]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 0.32 * len(rows) + 1.6), sharey=True)
    rate = np.array([100 * r["success_rate"] for r in rows])
    err = np.array([[rate[i] - 100 * r["ci95"][0], 100 * r["ci95"][1] - rate[i]] for i, r in enumerate(rows)]).T
    a.barh(y, rate, xerr=err, color=["tab:blue" if n == "clean" else "tab:gray" for n in names], capsize=2)
    a.set_yticks(y, names, fontsize=8)
    a.set_xlim(0, 100)
    a.set_xlabel("success [%] (Wilson 95% CI)")
    for i, r in enumerate(rows):
        if (p := r.get("paired")) is None:
            continue
        lo, hi = (100 * v for v in p["ci95_positions"])
        d = 100 * p["difference"]
        b.errorbar(d, y[i], xerr=[[d - lo], [hi - d]], fmt="o", capsize=2,
                   color="tab:red" if hi < 0 else ("tab:green" if lo > 0 else "tab:gray"))
    b.axvline(0, color="k", lw=0.8)
    b.set_xlim(-105, 30)
    b.set_xlabel("Δ vs clean [points] (paired 95% CI, positions resampled)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def condition_frames(env_cfg: EnvConfig, episode: Episode, conditions: Sequence[str]) -> list[np.ndarray]:
    """The first policy-camera frame (S, S, 3) uint8 of ``episode`` under each condition (same cube, seed, arm)."""
    cfg = EnvConfig(**{**asdict(env_cfg), "cameras": list(env_cfg.cameras)[:1]})
    env = make_env(cfg, render_mode=None)
    frames = []
    try:
        for spec in conditions:
            options = {"cube_xy": episode.cube_xy, **({"variation": spec} if spec != "none" else {})}
            obs, _ = env.reset(seed=episode.seed, options=options)
            frames.append(obs[cfg.cameras[0]])
    finally:
        env.close()
    return frames


def plot_frame_grid(env_cfg: EnvConfig, episode: Episode, conditions: Sequence[str], path: Path) -> Path | None:
    """A labelled grid of ``condition_frames``: what each perturbation does to the policy's view."""
    if not env_cfg.cameras:
        return None  # a policy without a camera (the oracle) sees no frames
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = condition_frames(env_cfg, episode, conditions)
    cols = min(6, len(frames))
    rows = math.ceil(len(frames) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, frame, spec in zip(axes.flat, frames, conditions, strict=False):
        ax.imshow(frame)
        ax.set_title("clean" if spec == "none" else spec, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
