"""How many control steps behind its commanded joint targets the arm of each recorded store follows.

    python scripts/tracking_lag.py demos/make_run120_dart.zarr demos/rehearse240.zarr

Prints, per store, the best-fitting lag (``s2robot.data.tracking``), the residual at whole lags and the mean demo
length: the simulated env's servos follow within the step (0), a Franka through franky (the rehearsal) ~1.5 steps late.
"""

from __future__ import annotations

import argparse

import numpy as np

from s2robot.data.store import EpisodeStore
from s2robot.data.tracking import best_lag, lag_residuals


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("stores", nargs="+", help="demo stores with proprio and target_executed (scripts/record_demos.py)")
    args = p.parse_args()
    for path in args.stores:
        try:
            store = EpisodeStore.open(path)
            missing = [k for k in ("proprio", "target_executed") if k not in store.keys]
            if missing:
                raise ValueError(f"{path} has no {missing}: record it with scripts/record_demos.py")
            joints = store.array("proprio")[:][:, :7]
            targets = store.array("target_executed")[:][:, :7]
            residuals = lag_residuals(joints, targets, store.episode_ends)
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}") from None
        best = best_lag(residuals)
        whole = ", ".join(f"{lag:.0f}: {1e3 * residuals[lag]:.1f}" for lag in (0.0, 1.0, 2.0))
        print(f"{path}: lag {best:.2f} steps (residual {1e3 * residuals[best]:.1f} mrad; at whole lags {whole} mrad), "
              f"{store.n_episodes} demos of {np.mean(store.episode_lengths):.1f} steps")


if __name__ == "__main__":
    main()
