"""An ablation table from evaluations run on the same episodes: each row's success per position set with its Wilson
interval, and its paired difference from a reference row (by default the row before it: one lever at a time).

    python scripts/ablation_table.py base=runs/a/eval +tail=runs/b/eval +noise=runs/c/eval --out runs/ablation

A row is called better or worse than its reference only when the 95% interval of the paired difference with the cube
positions resampled excludes zero; the interval over episodes is shown beside it (``workflows.paired``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from s2robot.workflows.paired import PairedComparison, compare_evaluations, load_results
from s2robot.workflows.report import set_summaries, wilson_interval


def _rate(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} = {100 * k / n:.1f}% [{100 * lo:.0f}–{100 * hi:.0f}]"


def _sets(results: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(set name, successes, episodes) per position set, from ``results.json`` (files written before it summarized
    sets: recomputed from its episodes and positions description, else one set of everything)."""
    sets = results.get("sets")
    if not sets and "positions" in results:
        episodes = [SimpleNamespace(**e) for e in results["episodes_detail"]]
        sets = set_summaries(episodes, results["positions"])
    sets = sets or [{"set": "all", "successes": results["successes"], "episodes": results["episodes"]}]
    return [(s["set"], int(s["successes"]), int(s["episodes"])) for s in sets]


def ablation_rows(rows: Sequence[tuple[str, Mapping[str, Any]]], reference: str | None = None
                  ) -> list[dict[str, Any]]:
    """One dict per (label, results): its set rates, failure modes and the paired comparison with its reference
    (the row named ``reference``, else the previous row; none for the first)."""
    labels = [label for label, _ in rows]
    if len(set(labels)) != len(labels):
        raise ValueError(f"row labels must be distinct, got {labels}")
    if reference is not None and reference not in labels:
        raise ValueError(f"reference row {reference!r} is not one of {labels}")
    by_label = dict(rows)
    out = []
    for i, (label, results) in enumerate(rows):
        ref = reference if reference is not None else (labels[i - 1] if i else None)
        row: dict[str, Any] = {"label": label, "sets": _sets(results), "failure_modes": results.get("failure_modes"),
                               "reference": None if ref == label else ref, "paired": None}
        if row["reference"] is not None:
            row["paired"] = compare_evaluations(results, by_label[ref], label, ref)
        out.append(row)
    return out


def format_ablation(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one row per run — success per set [Wilson 95%], the paired difference from its reference with its
    95% intervals (positions resampled, then episodes) and McNemar p, and the failure modes."""
    names = list(dict.fromkeys(name for row in rows for name, _, _ in row["sets"]))  # every row's sets, in order
    head = ["| row | " + " | ".join(f"{n} success [95% CI]" for n in names) + " | Δ vs reference (paired 95% CI: "
            "positions resampled; episodes; McNemar p) | failures |", "|---|" + "---|" * len(names) + "---|---|"]
    lines = []
    for row in rows:
        rates = {name: _rate(k, n) for name, k, n in row["sets"]}
        c = row["paired"]
        diff = "—" if c is None else _difference(c)
        modes = ", ".join(f"{m} {v}" for m, v in (row["failure_modes"] or {}).items() if v) or "—"
        lines.append(f"| {row['label']} | " + " | ".join(rates.get(n, "—") for n in names) + f" | {diff} | {modes} |")
    return "\n".join(head + lines)


def _difference(c: PairedComparison) -> str:
    lo, hi = c.ci95_positions or c.ci95
    return (f"{100 * c.difference:+.1f} vs {c.label_b} ({100 * lo:+.1f} to {100 * hi:+.1f}; {100 * c.ci95[0]:+.1f} "
            f"to {100 * c.ci95[1]:+.1f}; p = {c.mcnemar_p:.2g})"
            + (" **better**" if lo > 0 else " **worse**" if hi < 0 else ""))


def ablation_table(entries: Sequence[str], out: str | Path | None = None, reference: str | None = None) -> str:
    """``label=path`` entries (an eval folder or its results.json) → the markdown table; written to
    ``<out>/ablation.{md,json}`` when ``out`` is given."""
    rows = []
    for entry in entries:
        label, sep, path = entry.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"each row is LABEL=PATH (an eval folder or results.json), got {entry!r}")
        rows.append((label, load_results(path)))
    table = ablation_rows(rows, reference)
    text = format_ablation(table)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ablation.md").write_text(text + "\n")
        dump = [{**r, "paired": None if r["paired"] is None else vars(r["paired"])} for r in table]
        (out / "ablation.json").write_text(json.dumps(dump, indent=2))
    return text
