"""An ablation table of evaluations run on the same episodes (see s2robot.workflows.ablation).

    python scripts/ablation_table.py base=runs/a/eval tail=runs/b/eval tail+noise=runs/c/eval --out runs/ablation
    python scripts/ablation_table.py base=... x=... y=... --reference base     # every row against one row

Prints a markdown row per run: success per position set with its Wilson interval, the paired difference from the
previous row (or --reference) with its 95% interval and exact McNemar p, and the failure modes.
"""

from __future__ import annotations

import argparse

from s2robot.workflows.ablation import ablation_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rows", nargs="+", help="LABEL=PATH, PATH an eval folder or its results.json, in table order")
    p.add_argument("--reference", default=None, help="compare every row with this one (default: the row before)")
    p.add_argument("--out", default=None, help="also write <out>/ablation.{md,json}")
    args = p.parse_args()
    try:
        print(ablation_table(args.rows, args.out, args.reference))
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
