"""The ablation table: per-set rates with Wilson intervals and paired differences that give the known answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from s2robot.workflows.ablation import ablation_rows, ablation_table, format_ablation

ROOT = Path(__file__).resolve().parents[2]


def results(successes: list[bool]) -> dict:
    """48 paper episodes (16 positions × 3) then 32 held-out ones, as results.json has them."""
    eps = [{"position": i // 3, "repeat": i % 3, "seed": 1000 + i, "success": s, "cube_xy": [0.5, 0.01 * (i // 3)]}
           for i, s in enumerate(successes)]
    paper, held = eps[:48], eps[48:]
    sets = [{"set": "paper", "successes": sum(e["success"] for e in paper), "episodes": len(paper)},
            {"set": "held-out", "successes": sum(e["success"] for e in held), "episodes": len(held)}]
    return {"episodes_detail": eps, "sets": sets, "successes": sum(successes), "episodes": len(successes),
            "failure_modes": {"missed_grasp": len(successes) - sum(successes), "dropped": 0}}


def test_rows_compare_with_the_previous_row_and_call_only_clear_differences() -> None:
    base = results([i % 2 == 0 for i in range(80)])  # 40/80
    better = results([True] * 80)  # fixes all 40 failures: clearly better
    same = results([True] * 79 + [False])  # one episode worse than `better`: not distinguishable
    rows = ablation_rows([("base", base), ("fix", better), ("fix2", same)])
    assert rows[0]["paired"] is None and rows[1]["reference"] == "base" and rows[2]["reference"] == "fix"
    assert rows[1]["paired"].difference == pytest.approx(0.5) and rows[1]["paired"].ci95[0] > 0
    assert rows[2]["paired"].ci95[0] < 0 <= rows[2]["paired"].ci95[1]  # one discordant episode: no verdict
    text = format_ablation(rows)
    assert "| fix | 48/48 = 100.0% [93–100] | 32/32 = 100.0% [89–100] | +50.0 vs base" in text
    assert text.count("**better**") == 1 and "**worse**" not in text
    assert "missed_grasp 40" in text and "dropped 0" not in text
    against_base = ablation_rows([("base", base), ("fix", better), ("fix2", same)], reference="base")
    assert against_base[2]["reference"] == "base" and against_base[0]["paired"] is None


def test_a_difference_at_three_positions_is_not_called() -> None:
    """A fixes all 3 repeats at 3 of the 16 paper positions: the episodes interval excludes 0, the one with the
    cube positions resampled does not, and the table (whose verdict follows positions) calls nothing."""
    base = results([i >= 9 for i in range(80)])
    fix = results([True] * 80)  # positions 0, 1 and 2: 9 more successes
    c = ablation_rows([("base", base), ("fix", fix)])[1]["paired"]
    assert c.difference == pytest.approx(9 / 80) and c.ci95[0] > 0 and c.ci95_positions[0] <= 0 < c.ci95_positions[1]
    text = format_ablation(ablation_rows([("base", base), ("fix", fix)]))
    lo, hi = (f"{100 * v:+.1f}" for v in c.ci95_positions)
    assert f"{100 * c.difference:+.1f} vs base ({lo} to {hi}; {100 * c.ci95[0]:+.1f} to" in text
    assert "**better**" not in text
    assert "positions resampled; episodes; McNemar p" in text


def test_bad_rows_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct"):
        ablation_rows([("a", results([True] * 80)), ("a", results([True] * 80))])
    with pytest.raises(ValueError, match="reference row 'z'"):
        ablation_rows([("a", results([True] * 80))], reference="z")
    with pytest.raises(ValueError, match="LABEL=PATH"):
        ablation_table(["just/a/path"])


def test_script_writes_the_table(tmp_path: Path) -> None:
    for name, succ in (("a", [i % 2 == 0 for i in range(80)]), ("b", [True] * 80)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results(succ)))
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "ablation_table.py"), f"a={tmp_path / 'a'}",
                          f"b={tmp_path / 'b' / 'results.json'}", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "**better**" in run.stdout and (tmp_path / "out" / "ablation.md").read_text().strip() == run.stdout.strip()
    saved = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert saved[1]["paired"]["only_a"] == 40 and saved[0]["paired"] is None


def test_sets_are_recomputed_for_results_written_before_they_were_summarized() -> None:
    old = results([True] * 48 + [False] * 32)
    del old["sets"]
    old["positions"] = {"set": "paper", "fixed": 16, "n_random": 32, "position_seed": 0}
    old["episodes_detail"] = [{**e, "position": e["position"] if i < 48 else 16 + i - 48}
                              for i, e in enumerate(old["episodes_detail"])]
    row, = ablation_rows([("old", old)])
    assert row["sets"] == [("paper", 48, 48), ("held-out (32 random, seed 0)", 0, 32)]
