"""Paired comparison of two evaluations run on the same episodes (same positions, repeats and seeds).

Sixteen episodes carry about ±12 points of standard error, so two success rates side by side rarely say which
policy is better. Evaluated on the *same* episodes, two policies can be compared episode by episode: the
agreement table (both succeed, only A, only B, neither), the success difference A − B with two 95% bootstrap
intervals, and the exact McNemar test on the discordant episodes. One interval resamples episodes in pairs; the
other resamples whole cube positions (``cluster_bootstrap_ci``): the repeats (and training seeds) at one position
tend to succeed or fail together, so it is the wider and more honest one. A difference is called only when the
positions interval excludes zero (``scripts/compare_evals.py``, the ablation table, the encoder comparison).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s2robot.workflows.report import wilson_interval

EpisodeKey = tuple[int, int, int]  # (position, repeat, seed)


@dataclass(frozen=True)
class PairedComparison:
    """A − B over ``n`` paired episodes. difference, ci95: in success-rate units (0.1 = 10 points)."""

    label_a: str
    label_b: str
    n: int
    successes_a: int
    successes_b: int
    both: int
    only_a: int
    only_b: int
    neither: int
    difference: float
    ci95: tuple[float, float]
    mcnemar_p: float
    verdict: str
    # the 95% interval with the cube positions resampled (each with all its repeats and training seeds): episodes at
    # one cube position succeed or fail together, so this one is wider and honest about the positions sampled
    ci95_positions: tuple[float, float] | None = None
    n_positions: int | None = None


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the discordant episodes as a fair coin (binomial, p = 1/2)."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(a − b) over episodes resampled in pairs (``a``, ``b``: 0/1 per episode)."""
    d = np.asarray(a, float) - np.asarray(b, float)  # (n,)
    idx = np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def cluster_bootstrap_ci(a: np.ndarray, b: np.ndarray, clusters: np.ndarray | Sequence[Any], n_boot: int = 10_000,
                         seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(a − b) with whole clusters resampled: each draw takes K of the K clusters
    (e.g. cube positions) with replacement, every episode of a drawn cluster with it (``a``, ``b``: 0/1 per
    episode; ``clusters``: (n,) cluster labels)."""
    d = np.asarray(a, float) - np.asarray(b, float)  # (n,)
    _, label = np.unique(np.asarray(clusters), return_inverse=True, axis=0)
    label = label.reshape(-1)  # (n,) cluster index
    sums, counts = np.bincount(label, d), np.bincount(label).astype(float)  # (K,) each
    idx = np.random.default_rng(seed).integers(0, len(sums), (n_boot, len(sums)))
    means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def episode_outcomes(results: Mapping[str, Any]) -> dict[EpisodeKey, bool]:
    """{(position, repeat, seed): success} of a ``results.json``; a repeated key is an error."""
    out: dict[EpisodeKey, bool] = {}
    for e in results["episodes_detail"]:
        key = (int(e["position"]), int(e["repeat"]), int(e["seed"]))
        if key in out:
            raise ValueError(f"episode {key} (position, repeat, seed) appears twice in one evaluation")
        out[key] = bool(e["success"])
    return out


def pair_outcomes(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Success of A and of B on the same episodes, in one order; refuses evaluations of other episodes."""
    ea, eb = episode_outcomes(a), episode_outcomes(b)
    if ea.keys() != eb.keys():
        only_a, only_b = sorted(ea.keys() - eb.keys()), sorted(eb.keys() - ea.keys())
        raise ValueError(
            f"the evaluations ran different episodes, so they cannot be paired: {len(only_a)} only in A (e.g. "
            f"{only_a[:3]}), {len(only_b)} only in B (e.g. {only_b[:3]}) as (position, repeat, seed). Evaluate "
            "both with the same positions, repeats and seed (eval.py repeats=... seed=...)")
    cubes_a, cubes_b = _cubes(a), _cubes(b)
    moved = [k for k in sorted(cubes_a.keys() & cubes_b.keys()) if cubes_a[k] != cubes_b[k]]
    if moved:
        k = moved[0]
        raise ValueError(
            f"the evaluations put the cubes in different places, so they cannot be paired: {len(moved)} episodes, "
            f"e.g. {k} (position, repeat, seed) at {list(cubes_a[k])} in A and {list(cubes_b[k])} in B. Evaluate "
            "both on the same positions (eval.py positions=... n_random_positions=... position_seed=...)")
    keys = sorted(ea)
    return np.array([ea[k] for k in keys]), np.array([eb[k] for k in keys])


def _cubes(results: Mapping[str, Any]) -> dict[EpisodeKey, tuple[float, ...]]:
    """{(position, repeat, seed): cube (x, y)} of the episodes that record it."""
    return {(int(e["position"]), int(e["repeat"]), int(e["seed"])): tuple(e["cube_xy"])
            for e in results["episodes_detail"] if "cube_xy" in e}


def compare_evaluations(a: Mapping[str, Any], b: Mapping[str, Any], label_a: str = "A", label_b: str = "B",
                        seed: int = 0, by_positions: bool = True) -> PairedComparison:
    """The paired comparison of two ``results.json`` dicts (see the module docstring and ``compare_pooled``)."""
    return compare_pooled([(a, b)], label_a, label_b, seed, by_positions)


def compare_pooled(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], label_a: str = "A",
                   label_b: str = "B", seed: int = 0, by_positions: bool = True) -> PairedComparison:
    """The paired comparison over several pairs of evaluations pooled (e.g. one pair per training seed: A and B
    trained with seed k, evaluated on the same episodes); each pair is matched episode by episode first.

    Both intervals are computed: over episodes (``ci95``) and with the cube positions resampled
    (``ci95_positions``, see ``cluster_bootstrap_ci``). The verdict follows ``ci95_positions``, or ``ci95`` (the
    episodes interval) when ``by_positions`` is False.
    """
    if not pairs:
        raise ValueError("need at least one pair of evaluations to compare")
    matched = [pair_outcomes(a, b) for a, b in pairs]
    sa = np.concatenate([m[0] for m in matched])  # (n,) bool
    sb = np.concatenate([m[1] for m in matched])
    where = _positions([a for a, _ in pairs])  # (n, 2) each episode's cluster, in matched order
    ci = paired_bootstrap_ci(sa, sb, seed=seed)
    ci_pos = cluster_bootstrap_ci(sa, sb, where, seed=seed)
    only_a, only_b = int((sa & ~sb).sum()), int((~sa & sb).sum())
    lo, hi = ci_pos if by_positions else ci
    which = "with positions resampled" if by_positions else "over episodes"
    if lo > 0:
        verdict = f"{label_a} better (95% interval of the difference {which} excludes 0)"
    elif hi < 0:
        verdict = f"{label_b} better (95% interval of the difference {which} excludes 0)"
    else:
        verdict = f"cannot distinguish at this sample size (95% interval of the difference {which} includes 0)"
    return PairedComparison(label_a, label_b, len(sa), int(sa.sum()), int(sb.sum()), int((sa & sb).sum()), only_a,
                            only_b, int((~sa & ~sb).sum()), float(sa.mean() - sb.mean()), ci,
                            mcnemar_exact(only_a, only_b), verdict, ci_pos, len(np.unique(where, axis=0)))


def _positions(evaluations: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(n, 2) each episode's position as a cluster label, the evaluations' episodes concatenated, each in
    ``pair_outcomes``'s order (sorted keys): its cube (x, y) when every episode records one, else (position index,
    0) for all (one label per position either way; never a mix of the two)."""
    keys = [sorted(episode_outcomes(r)) for r in evaluations]
    cubes = [_cubes(r) for r in evaluations]
    if all(k in c for ks, c in zip(keys, cubes, strict=True) for k in ks):
        return np.array([c[k] for ks, c in zip(keys, cubes, strict=True) for k in ks], float)
    return np.array([(float(k[0]), 0.0) for ks in keys for k in ks])


def format_comparison(c: PairedComparison) -> str:
    """Markdown: both rates with Wilson intervals, the agreement table, the difference, its interval, p."""
    def rate(k: int) -> str:
        lo, hi = wilson_interval(k, c.n)
        return f"{k}/{c.n} = {100 * k / c.n:.1f}% (Wilson 95% CI {100 * lo:.1f}–{100 * hi:.1f}%)"

    return "\n".join([
        f"| | {c.label_b} succeeds | {c.label_b} fails |", "|---|---|---|",
        f"| **{c.label_a} succeeds** | {c.both} | {c.only_a} |",
        f"| **{c.label_a} fails** | {c.only_b} | {c.neither} |", "",
        f"- {c.label_a}: {rate(c.successes_a)}", f"- {c.label_b}: {rate(c.successes_b)}",
        f"- difference {c.label_a} − {c.label_b}: {100 * c.difference:+.1f} points, paired-bootstrap 95% CI "
        f"{100 * c.ci95[0]:+.1f} to {100 * c.ci95[1]:+.1f}; exact McNemar p = {c.mcnemar_p:.4g} "
        f"({c.only_a} vs {c.only_b} discordant episodes)",
        *([f"- with the {c.n_positions} cube positions resampled (all episodes of a position together): 95% CI "
           f"{100 * c.ci95_positions[0]:+.1f} to {100 * c.ci95_positions[1]:+.1f}"] if c.ci95_positions else []),
        f"- verdict: **{c.verdict}**",
    ])


def load_results(path: str | Path) -> dict[str, Any]:
    """A ``results.json``, given as the file or the evaluation folder holding it."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no results.json at {path}; run scripts/eval.py first")
    return json.loads(file.read_text())


def default_labels(a: dict[str, Any], b: dict[str, Any], paths: Sequence[str | Path]) -> tuple[str, str]:
    """Names for two evaluations: their encoder labels, or their paths when the labels are the same (two policies on
    one encoder, e.g. two recipes), so that the table says which is which."""
    la, lb = a.get("label", str(paths[0])), b.get("label", str(paths[1]))
    return (la, lb) if la != lb else (str(paths[0]), str(paths[1]))


def compare_eval_files(paths: Sequence[str | Path], labels: Sequence[str] | None, out: str | Path) -> PairedComparison:
    """Compare two evaluations on disk; print and write ``<out>/paired.{md,json}``."""
    a, b = (load_results(p) for p in paths)
    la, lb = labels or default_labels(a, b, paths)
    c = compare_evaluations(a, b, la, lb)
    text = format_comparison(c)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paired.md").write_text(text + "\n")
    (out / "paired.json").write_text(json.dumps({**asdict(c), "files": [str(p) for p in paths]}, indent=2))
    print(text + f"\n\nwritten: {out / 'paired.md'}, {out / 'paired.json'}")
    return c
