"""Policy checkpoints from the shell: ``python -m s2robot.workflows.checkpoint {convert,show,recover} PATH``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from s2robot.policy.checkpoint import convert_legacy, read_parts, recover


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2robot.workflows.checkpoint", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("convert", help="convert a format-1 last.pt/best.pt into a checkpoint folder beside it")
    conv.add_argument("path", type=Path)
    conv.add_argument("--out", type=Path, default=None,
                      help="new folder to write (default: the path without .pt); an existing one is refused")
    show = sub.add_parser("show", help="print a checkpoint folder's config parts")
    show.add_argument("path", type=Path)
    rec = sub.add_parser("recover", help="finish a checkpoint save that a crash interrupted (training does this too)")
    rec.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "convert":
            print(convert_legacy(args.path, args.out))
        elif args.cmd == "recover":
            print("\n".join(recover(args.path)) or f"{args.path}: no interrupted save found")
        else:
            print(json.dumps({k: v for k, v in read_parts(args.path).items() if k != "normalizer"}, indent=2))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
