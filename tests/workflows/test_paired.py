"""Paired comparison of two evaluations: exact McNemar, paired bootstrap, pairing checks, the script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2robot.workflows.paired import (
    cluster_bootstrap_ci,
    compare_evaluations,
    compare_pooled,
    format_comparison,
    mcnemar_exact,
    pair_outcomes,
    paired_bootstrap_ci,
)

ROOT = Path(__file__).resolve().parents[2]


def results(successes: list[bool], seeds_from: int = 1000) -> dict:
    """A results.json-like dict: episodes over 16 positions × repeats, seed = seeds_from + index."""
    return {"label": "x", "episodes_detail": [
        {"position": i % 16, "repeat": i // 16, "seed": seeds_from + i, "success": s} for i, s in enumerate(successes)]}


def test_mcnemar_exact_known_values() -> None:
    """Two-sided exact binomial test on the discordant pairs."""
    assert mcnemar_exact(9, 0) == pytest.approx(2 / 2**9)  # the H100 run: ViT-B-S² vs ViT-B, 9 vs 0
    assert mcnemar_exact(5, 1) == pytest.approx(2 * (1 + 6) / 64)
    assert mcnemar_exact(4, 4) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(1, 5) == mcnemar_exact(5, 1)


def test_paired_bootstrap_interval() -> None:
    """Identical outcomes give exactly 0; one-sided discordance excludes 0; the interval holds the mean."""
    a = np.array([1, 0, 1, 1, 0] * 10, bool)
    assert paired_bootstrap_ci(a, a) == (0.0, 0.0)
    assert paired_bootstrap_ci(np.ones(48, bool), np.zeros(48, bool)) == (1.0, 1.0)
    b = a.copy()
    b[:9] = False  # 9 of A's successes become failures of B... only where A succeeded
    lo, hi = paired_bootstrap_ci(a, b)
    assert lo <= (a.mean() - b.mean()) <= hi
    assert paired_bootstrap_ci(a, b) == paired_bootstrap_ci(a, b)  # seeded: reproducible


def test_cluster_bootstrap_resamples_whole_positions() -> None:
    """Repeats at one position that agree carry one position's information, not three episodes': the interval with
    positions resampled is wider; each position's difference taken alone gives that difference exactly."""
    rng = np.random.default_rng(0)
    per_position = rng.random(16) < 0.5  # (16,) A wins at these positions, ties elsewhere
    a = np.repeat(per_position, 3)  # (48,) 3 repeats per position, all alike
    b = np.zeros(48, bool)
    positions = np.repeat(np.arange(16), 3)
    lo_e, hi_e = paired_bootstrap_ci(a, b)
    lo_p, hi_p = cluster_bootstrap_ci(a, b, positions)
    assert lo_p <= a.mean() <= hi_p and hi_p - lo_p > 1.3 * (hi_e - lo_e)
    assert cluster_bootstrap_ci(a, b, positions) == cluster_bootstrap_ci(a, b, positions)  # seeded
    assert cluster_bootstrap_ci(a, b, np.arange(48)) == pytest.approx(paired_bootstrap_ci(a, b), abs=0.03)
    one = np.zeros(48, int)  # a single cluster: every draw is the whole sample
    assert cluster_bootstrap_ci(a, b, one) == (pytest.approx(a.mean()), pytest.approx(a.mean()))
    xy = np.stack([positions * 0.01, positions * 0.0 + 0.2], axis=1)  # (48, 2) cube (x, y) as the labels
    assert cluster_bootstrap_ci(a, b, xy) == cluster_bootstrap_ci(a, b, positions)


def test_pooled_verdict_by_positions_and_clusters_never_mixed() -> None:
    """by_positions: the verdict names the positions interval and follows it; positions are one cluster each
    whether they are told by cube (x, y) or by index, never split into both."""
    base = [False] * 48
    s2 = [i < 9 for i in range(48)]  # 9 positions won once each
    c = compare_pooled([(results(s2), results(base))], "s2", "plain", by_positions=True)
    assert c.verdict.startswith("s2 better") and "with positions resampled" in c.verdict
    assert c.ci95_positions[0] > 0 and c.n_positions == 16
    w = compare_pooled([(results(base), results(s2))], "a", "b", by_positions=True)
    assert w.verdict.startswith("b better") and w.ci95_positions[1] < 0
    with_xy = results(s2)
    for e in with_xy["episodes_detail"]:
        e["cube_xy"] = [0.5 + 0.01 * e["position"], 0.1]
    base_xy = {"episodes_detail": [{**e, "success": False} for e in with_xy["episodes_detail"]]}
    mixed = compare_pooled([(with_xy, base_xy), (results(s2, seeds_from=5000), results(base, seeds_from=5000))],
                           by_positions=True)
    assert mixed.n_positions == 16 and mixed.n == 96  # one seed with cubes, one without: still 16 positions
    assert compare_pooled([(with_xy, base_xy)], by_positions=True).n_positions == 16


def test_known_answers_on_synthetic_results() -> None:
    """9 vs 0 discordant out of 48 is a difference; 2 vs 1 is not; the verdict says which."""
    base = [False] * 48
    s2 = [i < 9 for i in range(48)]
    c = compare_evaluations(results(s2), results(base), "vitb_s2", "vitb")
    assert (c.n, c.successes_a, c.successes_b, c.only_a, c.only_b, c.both, c.neither) == (48, 9, 0, 9, 0, 0, 39)
    assert c.difference == pytest.approx(9 / 48) and c.ci95[0] > 0 and c.verdict.startswith("vitb_s2 better")
    assert c.mcnemar_p == pytest.approx(0.00390625)
    close = compare_evaluations(results([i < 2 for i in range(48)]), results([i == 5 for i in range(48)]))
    assert close.ci95[0] <= 0 <= close.ci95[1] and close.verdict.startswith("cannot distinguish")
    worse = compare_evaluations(results(base), results(s2), "a", "b")
    assert worse.ci95[1] < 0 and worse.verdict.startswith("b better")
    text = format_comparison(c)
    assert "| **vitb_s2 succeeds** | 0 | 9 |" in text and "McNemar p = 0.003906" in text
    assert c.n_positions == 16 and "with the 16 cube positions resampled" in text  # no cube_xy: by position index
    assert c.ci95_positions[0] <= c.difference <= c.ci95_positions[1]


def test_pairing_is_by_episode_not_by_order() -> None:
    """Episodes are matched by (position, repeat, seed), whatever their order; other episodes are refused."""
    a = results([i % 3 == 0 for i in range(32)])
    b = {"episodes_detail": list(reversed(a["episodes_detail"]))}
    sa, sb = pair_outcomes(a, b)
    assert np.array_equal(sa, sb)
    with pytest.raises(ValueError, match="different episodes"):
        pair_outcomes(a, results([True] * 32, seeds_from=2000))
    dup = {"episodes_detail": a["episodes_detail"] + a["episodes_detail"][:1]}
    with pytest.raises(ValueError, match="twice"):
        pair_outcomes(dup, a)


def test_script_prints_and_writes(tmp_path: Path) -> None:
    """scripts/compare_evals.py on two results files: table printed, paired.{md,json} written; clear errors."""
    for name, succ in (("a", [i < 9 for i in range(48)]), ("b", [False] * 48)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results(succ)))
    run = subprocess.run([sys.executable, str(ROOT / "scripts/compare_evals.py"), str(tmp_path / "a"),
                          str(tmp_path / "b" / "results.json"), "--labels", "S2", "plain", "--out",
                          str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "S2 better" in run.stdout
    saved = json.loads((tmp_path / "out" / "paired.json").read_text())
    assert saved["only_a"] == 9 and saved["only_b"] == 0 and saved["ci95"][0] > 0
    same_encoder = subprocess.run([sys.executable, str(ROOT / "scripts/compare_evals.py"), str(tmp_path / "a"),
                                   str(tmp_path / "b"), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert same_encoder.returncode == 0, same_encoder.stderr  # both labelled "x": the table names them by path
    assert f"{tmp_path / 'a'} better" in same_encoder.stdout and "x better" not in same_encoder.stdout
    missing = subprocess.run([sys.executable, str(ROOT / "scripts/compare_evals.py"), str(tmp_path / "nope"),
                              str(tmp_path / "b")], capture_output=True, text=True)
    assert missing.returncode != 0 and "no results.json" in missing.stderr


def test_evaluations_of_other_cube_positions_are_not_paired() -> None:
    """Same (position, repeat, seed) but another held-out set: the cubes differ, so pairing is refused."""
    a, b = results([True] * 16), results([False] * 16)
    for i, (ea, eb) in enumerate(zip(a["episodes_detail"], b["episodes_detail"], strict=True)):
        ea["cube_xy"], eb["cube_xy"] = [0.5, 0.01 * i], [0.5, 0.01 * i]
    assert len(pair_outcomes(a, b)[0]) == 16
    b["episodes_detail"][3]["cube_xy"] = [0.6, 0.0]
    with pytest.raises(ValueError, match=r"different places.*\(3, 0, 1003\).*position_seed"):
        pair_outcomes(a, b)
