"""MVP weights from the shell: ``python -m s2robot.workflows.weights {list,download NAME}``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from s2robot.vision.vit import MVP_VARIANTS
from s2robot.vision.weights import MVP_URLS, cache_dir, download


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2robot.workflows.weights", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    dl = sub.add_parser("download", help="download an official MVP checkpoint (needs internet)")
    dl.add_argument("name", choices=sorted(MVP_URLS))
    dl.add_argument("--dir", type=Path, default=None, help=f"target folder (default {cache_dir()})")
    dl.add_argument("--md5", default=None, help="expected md5 of the file, if you have a trusted one")
    sub.add_parser("list", help="show where each MVP variant's weights would be found")
    args = parser.parse_args(argv)
    if args.cmd == "download":
        download(args.name, args.dir, args.md5)
        return 0
    for name in MVP_VARIANTS:
        path = cache_dir() / f"{name}.pth"
        print(f"{name:22s} {'found' if path.is_file() else 'missing':8s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
