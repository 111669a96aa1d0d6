"""The encoder comparison's report: table rows from evaluation reports, the markdown table and the chart.

``comparison_rows`` pools each row's evaluations over training seeds (mean, spread, Wilson 95% interval of every
episode) and pairs it with its reference row; ``format_comparison`` writes the rows as a markdown table like the S²
paper's Table 6, ``plot_comparison`` as a bar chart with a forest plot of the paired differences. Pure functions of
the reports: ``workflows.compare`` runs the work and calls them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from s2robot.workflows.paired import compare_pooled, pair_outcomes
from s2robot.workflows.report import wilson_interval

# Probe targets shown in the table (``sim.frames.LABELS`` has the gripper opening too, kept in the JSON).
PROBE_TARGETS = {"cube_pos": "cube", "fingertip_pos": "fingertip"}
# The paper's cube-pick success over 16 positions (S², Table 6), keyed by (variant, S² scales [px]).
PAPER_SUCCESS: dict[tuple[str, tuple[int, ...]], float] = {
    ("vitb-mae-egosoup", (224,)): 0.438,
    ("vitb-mae-egosoup", (224, 448)): 0.625,
    ("vitl-256-mae-egosoup", (256,)): 0.500,
}


def comparison_rows(
    reports_by_encoder: Mapping[str, Mapping[int, Mapping[str, Any]]],
    references: Mapping[str, str] | None = None,
    probes: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> list[dict[str, Any]]:
    """One row per encoder from its evaluation reports ({row label: {training seed: evaluate() report}}).

    Rates are fractions: ``success_mean`` / ``success_std`` (sample std, None for one seed) / ``success_min``
    / ``success_max`` over seeds; ``ci95`` is the Wilson interval of all episodes of all seeds pooled.
    references: {row label: label of the row it is compared with}: ``paired`` is then that comparison (this row
        minus the reference, episodes matched per training seed both rows have, pooled; see ``compare_pooled``)
    probes: {row label: {target: {r2, err_cm, ...}}}: kept as the row's ``probe``
    """
    references, probes = references or {}, probes or {}
    rows = []
    for name, by_seed in reports_by_encoder.items():
        if not by_seed:
            raise ValueError(f"encoder {name!r} has no evaluation reports")
        seeds = sorted(by_seed)
        rates = np.array([by_seed[s]["success_rate"] for s in seeds], float)
        successes = sum(int(by_seed[s]["successes"]) for s in seeds)
        episodes = sum(int(by_seed[s]["episodes"]) for s in seeds)
        enc = by_seed[seeds[0]]["encoder"]
        img_sizes = [int(s) for s in enc["img_sizes"]]
        readout = enc["readout"]
        rows.append({
            "encoder": name,
            "variant": enc["variant"],
            "img_sizes": img_sizes,
            "params_m": enc["params"] / 1e6,
            "gflops_per_frame": float(enc["gflops_per_frame"]),
            "readout": readout,
            "feature_dim": enc.get("feature_dim"),
            "weights_random": any(bool(by_seed[s]["weights_random"]) for s in seeds),
            "seeds": seeds,
            "success_per_seed": rates.tolist(),
            "success_mean": float(rates.mean()),
            "success_std": float(rates.std(ddof=1)) if len(rates) > 1 else None,
            "success_min": float(rates.min()),
            "success_max": float(rates.max()),
            "successes": successes,
            "episodes": episodes,
            "ci95": list(wilson_interval(successes, episodes)),
            # the paper's policies read MVP's CLS token at its 16 positions: other readouts or positions have no
            # paper number
            "paper_success": PAPER_SUCCESS.get((enc["variant"], tuple(img_sizes)))
            if readout == "cls" and all(_on_paper_positions(by_seed[s]) for s in seeds) else None,
            "probe": probes.get(name),
            "paired": _paired(name, references.get(name), reports_by_encoder),
        })
    return rows


def _paired(label: str, reference: str | None, reports: Mapping[str, Mapping[int, Mapping[str, Any]]]
            ) -> dict[str, Any] | None:
    """The paired comparison of row ``label`` with row ``reference`` over the training seeds both have."""
    if reference is None or reference == label:
        return None
    if reference not in reports:
        raise ValueError(f"reference row {reference!r} has no evaluations (rows: {list(reports)})")
    seeds = sorted(set(reports[label]) & set(reports[reference]))
    if not seeds:
        return None
    pairs = [(reports[label][s], reports[reference][s]) for s in seeds]
    c = compare_pooled(pairs, label, reference, by_positions=True)
    per_seed = [float(np.mean(a) - np.mean(b)) for a, b in (pair_outcomes(*pair) for pair in pairs)]
    return asdict(c) | {"seeds": seeds, "per_seed": per_seed}


def _on_paper_positions(report: Mapping[str, Any]) -> bool:
    """Whether an evaluation report is over the paper's 16 positions only (reports from before held-out sets are)."""
    positions = report.get("positions", {"set": "paper", "n_random": 0})
    return positions["set"] == "paper" and not positions["n_random"]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def format_comparison(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table like the paper's Table 6, random-weight encoders labelled RANDOM; probe and paired
    columns when the rows have them."""
    targets = [t for t in PROBE_TARGETS if any(r.get("probe") and t in r["probe"] for r in rows)]
    paired = any(r.get("paired") for r in rows)
    head = ["encoder", "variant", "scales [px]", "readout (dim)", "params [M]", "GFLOPs/frame"]
    head += [f"{PROBE_TARGETS[t]} probe R² / cm" for t in targets]
    head += ["success % (mean ± std, min–max)", "95% CI % (pooled)", "seeds", "episodes"]
    head += ["paired Δ vs reference [95% CI, positions resampled], points"] if paired else []
    head += ["paper %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        variant = f"{r['variant']} (**RANDOM weights**)" if r["weights_random"] else r["variant"]
        scales = "+".join(f"{s}²" for s in r["img_sizes"])
        success = _pct(r["success_mean"])
        if r["success_std"] is not None:
            success += f" ± {_pct(r['success_std'])} ({_pct(r['success_min'])}–{_pct(r['success_max'])})"
        lo, hi = r["ci95"]
        paper = _pct(r["paper_success"]) if r["paper_success"] is not None else "–"
        readout = f"{r['readout']} ({r['feature_dim']})"
        cells = [r["encoder"], variant, scales, readout, f"{r['params_m']:.3g}", f"{r['gflops_per_frame']:.3g}"]
        probe_ = r.get("probe") or {}
        cells += [f"{probe_[t]['r2']:.3f} / {probe_[t]['err_cm']:.2f}" if t in probe_ else "–" for t in targets]
        cells += [success, f"{_pct(lo)}–{_pct(hi)}", ", ".join(map(str, r["seeds"])),
                  f"{r['successes']}/{r['episodes']}"]
        cells += [_format_paired(r.get("paired"))] if paired else []
        lines.append("| " + " | ".join([*cells, paper]) + " |")
    if paired:
        lines.append("\nPaired against the reference (same episodes per training seed, pooled; exact McNemar p). The "
                     "table's 95% interval resamples the cube positions, each with all its repeats and training "
                     "seeds (episodes at one position succeed or fail together); the episode-level interval is "
                     "narrower. Both are conditional on the training seeds run: the difference per seed shows "
                     "their spread:")
        lines += [_paired_line(c) for c in (r.get("paired") for r in rows) if c]
    if any(r["weights_random"] for r in rows):
        lines.append("\nRANDOM weights: the encoder is not pretrained; its success rate says nothing about "
                     "pretrained features (a CPU-sized stand-in only).")
    return "\n".join(lines)


def _paired_line(c: Mapping[str, Any]) -> str:
    """One verdict line under the table: difference, both intervals, McNemar p, per-seed differences, verdict."""
    pos = c.get("ci95_positions") or c["ci95"]
    seeds = c.get("per_seed")
    per_seed = "" if not seeds else ("; per training seed " + ", ".join(
        f"{s}: {100 * d:+.1f}" for s, d in zip(c["seeds"], seeds, strict=True)))
    return (f"- {c['label_a']} − {c['label_b']}: {100 * c['difference']:+.1f} points, positions resampled "
            f"[{100 * pos[0]:+.1f}, {100 * pos[1]:+.1f}] ({c.get('n_positions')} positions), episodes resampled "
            f"[{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}], p = {c['mcnemar_p']:.3g}, over {c['n']} "
            f"episodes{per_seed}: **{c['verdict']}**")


def _plot_paired(ax: Any, paired: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
    """Forest plot: each row's difference from its reference [points], 95% interval with positions resampled,
    one dot per training seed; a zero line."""
    y = np.arange(len(paired))[::-1]
    for yi, (i, c) in zip(y, paired, strict=True):
        lo, hi = (100 * v for v in (c.get("ci95_positions") or c["ci95"]))
        d = 100 * c["difference"]
        color = f"C{i}"
        ax.errorbar(d, yi, xerr=[[max(d - lo, 0.0)], [max(hi - d, 0.0)]], fmt="o", color=color, capsize=5)
        for s in c.get("per_seed") or []:
            ax.scatter(100 * s, yi - 0.15, color=color, s=10, marker="|")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [f"{c['label_a']}\nvs {c['label_b']}" for _, c in paired], fontsize=7)
    ax.set_ylim(-0.7, len(paired) - 0.3)
    ax.set_xlabel("paired success difference [points]")
    ax.set_title("vs reference: 95% CI with positions resampled;\nticks: training seeds", fontsize=9)


def _format_paired(c: Mapping[str, Any] | None) -> str:
    """``+6.2 [−1.0, +13.5] vs ref (n=144)``, bold when the interval excludes 0; ``–`` for none (the reference).
    The interval is the one with positions resampled where the comparison has it."""
    if c is None:
        return "–"
    lo, hi = c.get("ci95_positions") or c["ci95"]
    text = f"{100 * c['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] vs {c['label_b']} (n={c['n']})"
    return f"**{text}**" if lo > 0 or hi < 0 else text


def plot_comparison(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Bar chart of mean success per encoder with pooled Wilson 95% error bars, seeds as dots, paper as ticks; with
    paired rows, a second panel of each row's paired difference from its reference (95% interval with positions
    resampled, per-seed differences as dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.arange(len(rows))
    mean = np.array([100 * r["success_mean"] for r in rows])
    lo = np.array([100 * r["ci95"][0] for r in rows])
    hi = np.array([100 * r["ci95"][1] for r in rows])
    yerr = np.stack([np.clip(mean - lo, 0, None), np.clip(hi - mean, 0, None)])  # (2, n)
    paired = [(i, r["paired"]) for i, r in enumerate(rows) if r.get("paired")]
    width = 1.8 * len(rows) + 2.5
    if paired:
        fig, (ax, ax_d) = plt.subplots(1, 2, figsize=(width + 5, 4.5), gridspec_kw={"width_ratios": [width, 5]})
        _plot_paired(ax_d, paired)
    else:
        fig, ax = plt.subplots(figsize=(width, 4.5))
    colors = ["0.75" if r["weights_random"] else f"C{i}" for i, r in enumerate(rows)]
    bars = ax.bar(x, mean, yerr=yerr, capsize=6, color=colors, edgecolor="k")
    for i, r in enumerate(rows):
        if r["weights_random"]:
            bars[i].set_hatch("//")
        if len(r["seeds"]) > 1:
            ax.scatter([i] * len(r["seeds"]), [100 * s for s in r["success_per_seed"]], color="k", s=12, zorder=3)
        if r["paper_success"] is not None:
            ax.hlines(100 * r["paper_success"], i - 0.4, i + 0.4, colors="r", linestyles="--", zorder=4,
                      label="paper" if not ax.get_legend_handles_labels()[1] else None)
        ax.text(i + 0.05, 1.5, f"{mean[i]:.1f}%", ha="left", va="bottom", fontsize=8)  # beside the error bar
    labels = [f"{r['encoder']}{' (RANDOM)' if r['weights_random'] else ''}\n"
              f"{'+'.join(f'{s}²' for s in r['img_sizes'])}, {r['params_m']:.0f} M, "
              f"{r['gflops_per_frame']:.1f} GFLOPs"
              f"{'' if r['readout'] == 'cls' or r['readout'] in r['encoder'] else ', ' + r['readout']}" for r in rows]
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_ylabel("success % (mean over seeds)")
    ax.set_title((title or "encoder comparison (cube pick)") + "\nerror bars: Wilson 95% CI of all episodes pooled; "
                 "dots: seeds", fontsize=9)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
