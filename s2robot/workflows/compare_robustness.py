"""Encoders under the perturbation suite: which frozen encoder keeps its success when the scene changes?

For every encoder × training seed of an encoder comparison, the robustness suite (``workflows.robustness``) runs the
same held-out episodes clean and under each condition. Per condition and encoder this pools the seeds: success
with its Wilson interval, the paired difference from the reference encoder under that condition, and the
difference of the two *drops* from clean (how much more, or less, the encoder loses than the reference when the
scene changes; per episode (A_cond − A_clean) − (R_cond − R_clean), cube positions resampled). Writes
``<out>/robustness.{md,json,png}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s2robot.workflows.paired import EpisodeKey, cluster_bootstrap_ci, compare_pooled, episode_outcomes
from s2robot.workflows.report import wilson_interval

Results = Mapping[str, Any]  # one results.json
BySeed = Mapping[int, Mapping[str, Results]]  # {training seed: {condition: results}}


def _outcomes(by_seed: BySeed, spec: str) -> dict[tuple[int, EpisodeKey], bool]:
    return {(s, k): v for s, conds in by_seed.items() for k, v in episode_outcomes(conds[spec]).items()}


def _cubes(by_seed: BySeed, spec: str) -> dict[tuple[int, EpisodeKey], tuple[float, ...]]:
    return {(s, (int(e["position"]), int(e["repeat"]), int(e["seed"]))): tuple(e["cube_xy"])
            for s, conds in by_seed.items() for e in conds[spec]["episodes_detail"]}


def drop_difference(a: BySeed, ref: BySeed, spec: str, seed: int = 0) -> dict[str, Any]:
    """How much more encoder ``a`` loses from clean to ``spec`` than ``ref`` does, pooled over their common training
    seeds: mean over episodes of (a_spec − a_clean) − (ref_spec − ref_clean), in success-rate units, with a 95%
    interval that resamples whole cube positions. Positive: ``a`` keeps more of its success."""
    seeds = sorted(set(a) & set(ref))
    a_s, ref_s = {s: a[s] for s in seeds}, {s: ref[s] for s in seeds}
    oa_c, oa_0 = _outcomes(a_s, spec), _outcomes(a_s, "none")
    or_c, or_0 = _outcomes(ref_s, spec), _outcomes(ref_s, "none")
    keys = sorted(oa_c)
    if not (keys == sorted(oa_0) == sorted(or_c) == sorted(or_0)):
        raise ValueError(f"the evaluations of {spec!r} and clean ran different episodes: they cannot be paired")
    da = np.array([oa_c[k] - oa_0[k] for k in keys], float)  # (n,) each in {-1, 0, 1}
    dr = np.array([or_c[k] - or_0[k] for k in keys], float)
    cubes = _cubes(a_s, "none")
    lo, hi = cluster_bootstrap_ci(da, dr, np.array([cubes[k] for k in keys]), seed=seed)
    return {"difference": float((da - dr).mean()), "ci95_positions": [lo, hi], "n": len(keys),
            "drop_a": float(-da.mean()), "drop_ref": float(-dr.mean())}


def robustness_rows(results: Mapping[str, BySeed], reference: str | None) -> list[dict[str, Any]]:
    """One row per condition: per encoder (label) the pooled success, its Wilson interval and drop from clean; and for
    every encoder but ``reference`` the paired difference from it under the condition and the difference of drops."""
    labels = list(results)
    specs = list(next(iter(next(iter(results.values())).values())))
    rows = []
    for spec in specs:
        row: dict[str, Any] = {"condition": spec, "encoders": {}}
        for label in labels:
            by_seed = results[label]
            k = sum(int(c[spec]["successes"]) for c in by_seed.values())
            n = sum(int(c[spec]["episodes"]) for c in by_seed.values())
            k0 = sum(int(c["none"]["successes"]) for c in by_seed.values())
            cell = {"successes": k, "episodes": n, "success_rate": k / n, "ci95": list(wilson_interval(k, n)),
                    "drop": (k0 - k) / n, "seeds": sorted(by_seed)}
            if reference is not None and label != reference:
                pairs = [(by_seed[s][spec], results[reference][s][spec]) for s in sorted(by_seed)
                         if s in results[reference]]
                c = compare_pooled(pairs, label, reference)
                cell["vs_reference"] = {"difference": c.difference, "ci95_positions": list(c.ci95_positions),
                                        "verdict": c.verdict}
                if spec != "none":
                    cell["drop_vs_reference"] = drop_difference(by_seed, results[reference], spec)
            row["encoders"][label] = cell
        rows.append(row)
    return rows


def _interval(d: float, ci: Sequence[float]) -> str:
    mark = " **better**" if ci[0] > 0 else (" **worse**" if ci[1] < 0 else "")
    return f"{100 * d:+.1f} ({100 * ci[0]:+.1f} to {100 * ci[1]:+.1f}){mark}"


def format_robustness_comparison(rows: Sequence[Mapping[str, Any]], reference: str | None) -> str:
    """Markdown: success per encoder and condition; then each encoder against the reference under each condition, and
    its drop from clean against the reference's."""
    labels = list(rows[0]["encoders"])
    head = "| condition | " + " | ".join(f"{lb} [Wilson 95% CI]" for lb in labels) + " |"
    lines = [head, "|" + "---|" * (1 + len(labels))]
    for r in rows:
        cells = []
        for lb in labels:
            c = r["encoders"][lb]
            lo, hi = c["ci95"]
            cells.append(f"{c['successes']}/{c['episodes']} = {100 * c['success_rate']:.1f}% [{100 * lo:.0f}–"
                         f"{100 * hi:.0f}]")
        lines.append(f"| {'clean' if r['condition'] == 'none' else r['condition']} | " + " | ".join(cells) + " |")
    others = [lb for lb in labels if lb != reference]
    if reference is None or not others:
        return "\n".join(lines)
    lines += ["", f"Against {reference} (points; paired over the same episodes and training seeds, 95% CI with the "
              "cube positions resampled): the difference under each condition, and the difference of the drops from "
              "clean (positive: keeps more of its success than the reference does).", "",
              "| condition | " + " | ".join(f"{lb} − {reference} | drop {reference} − drop {lb}" for lb in others)
              + " |", "|" + "---|" * (1 + 2 * len(others))]
    for r in rows:
        cells = []
        for lb in others:
            c = r["encoders"][lb]
            v = c["vs_reference"]
            cells.append(_interval(v["difference"], v["ci95_positions"]))
            d = c.get("drop_vs_reference")
            cells.append("—" if d is None else _interval(d["difference"], d["ci95_positions"]))
        lines.append(f"| {'clean' if r['condition'] == 'none' else r['condition']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_robustness_comparison(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """Grouped horizontal bars: success per condition for each encoder, with Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows[0]["encoders"])
    y = np.arange(len(rows))[::-1]
    h = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    for j, lb in enumerate(labels):
        rate = np.array([100 * r["encoders"][lb]["success_rate"] for r in rows])
        lo = np.array([100 * r["encoders"][lb]["ci95"][0] for r in rows])
        hi = np.array([100 * r["encoders"][lb]["ci95"][1] for r in rows])
        ax.barh(y + (len(labels) / 2 - j - 0.5) * h, rate, h, xerr=[rate - lo, hi - rate], label=lb, capsize=1.5)
    ax.set_yticks(y, ["clean" if r["condition"] == "none" else r["condition"] for r in rows], fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("success [%] (pooled over training seeds; Wilson 95% CI)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_robustness_comparison(out: Path, robust: Mapping[str, Mapping[int, Mapping[str, Results]]],
                                reference: str | None, title: str = "") -> str:
    """Write ``<out>/robustness.{md,json,png}`` from the suites run so far ({row label: {seed: {condition:
    results}}}), over the training seeds every row has; ``reference`` is an encoder name (a row label may add
    `` · <readout>``). Returns the markdown table ("" while no seed is complete)."""
    seeds = set.intersection(*(set(by_seed) for by_seed in robust.values())) if robust else set()
    if not seeds:
        return ""
    results = {label: {s: by_seed[s] for s in sorted(seeds)} for label, by_seed in robust.items()}
    ref = next((lb for lb in results if reference is not None and lb.split(" · ")[0] == reference), None)
    rows = robustness_rows(results, ref)
    table = format_robustness_comparison(rows, ref)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.md").write_text(table + "\n")
    (out / "robustness.json").write_text(json.dumps({"rows": rows, "seeds": sorted(seeds), "reference": ref},
                                                    indent=2))
    plot_robustness_comparison(rows, out / "robustness.png", f"{title} (seeds {sorted(seeds)})")
    return table
