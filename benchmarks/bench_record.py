"""Recording benchmark: steps/s with 1 and N worker processes (scaling ratio) and bytes per stored demo.

    python benchmarks/bench_record.py --episodes 8 --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from s2robot.data.store import EpisodeStore
from s2robot.sim.env import EnvConfig
from s2robot.workflows.record import RecordConfig, record_demos


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--image-size", type=int, default=224)
    args = p.parse_args()
    env = EnvConfig(image_size=args.image_size)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, args.workers):
            out = Path(tmp) / f"w{workers}.zarr"
            t0 = time.perf_counter()
            record_demos(RecordConfig(env=env, out=str(out), n_episodes=args.episodes, workers=workers),
                         progress=False)
            wall = time.perf_counter() - t0
            store = EpisodeStore.open(out)
            rows[workers] = (store.n_steps / wall, disk_bytes(out) / store.n_episodes, store.n_steps)
    (r1, b1, n), (rn, _, _) = rows[1], rows[args.workers]
    print(f"{args.episodes} expert episodes, {n} steps, one {args.image_size}² camera (wall time incl. start-up)")
    print(f"1 worker   {r1:7.1f} steps/s")
    print(f"{args.workers} workers  {rn:7.1f} steps/s   scaling {rn / r1:.2f}x")
    print(f"bytes per demo {b1 / 2**20:.2f} MiB ({n / args.episodes:.0f} steps)")


if __name__ == "__main__":
    main()
