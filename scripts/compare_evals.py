"""Paired comparison of two evaluations of the same episodes (see s2robot.workflows.paired).

    python scripts/compare_evals.py runs/a/eval runs/b/eval                      # folders or results.json files
    python scripts/compare_evals.py A B --labels vitb vitb_s2 --out runs/paired

Prints the agreement table, both success rates with Wilson intervals, the difference with its 95% bootstrap
intervals (episodes resampled in pairs; whole cube positions resampled) and the exact McNemar p-value; writes
<out>/paired.{md,json}. A better/worse verdict only when the positions interval excludes zero.
"""

from __future__ import annotations

import argparse

from s2robot.workflows.paired import compare_eval_files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", help="evaluation A: its eval folder or results.json")
    p.add_argument("b", help="evaluation B, run on the same positions, repeats and seed")
    p.add_argument("--labels", nargs=2, default=None, help="names for A and B (default: their encoder labels)")
    p.add_argument("--out", default="runs/paired", help="where paired.md and paired.json go")
    args = p.parse_args()
    try:
        compare_eval_files([args.a, args.b], args.labels, args.out)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
