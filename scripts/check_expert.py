"""Measure the scripted expert's success rate: N random cube positions and the 16 EVAL_POSITIONS.

Usage: MUJOCO_GL=egl python scripts/check_expert.py [--episodes 200] [--seed 0] [--noise-std 0.0]
    [--joint-noise 0.0]
No cameras are rendered, so this runs at physics speed.
"""

import argparse
import time

import numpy as np

from envs import EVAL_POSITIONS, CubePickEnv, ScriptedExpert


def run_episode(env: CubePickEnv, expert: ScriptedExpert, seed: int, cube_xy=None) -> tuple[bool, int]:
    """One episode until success or truncation; returns (success, steps taken)."""
    obs, info = env.reset(seed=seed, options={"cube_xy": cube_xy})
    expert.reset()
    for t in range(1, env.max_steps + 1):
        obs, _, terminated, truncated, info = env.step(expert.act(obs, info).executed)
        if terminated or truncated:
            return bool(info["is_success"]), t
    raise AssertionError("unreachable: the env truncates at max_steps")


def summarize(name: str, results: list[tuple[bool, int]]) -> None:
    ok = np.array([s for s, _ in results])
    lengths = np.array([t for s, t in results if s])
    print(
        f"{name}: {ok.sum()}/{ok.size} = {100 * ok.mean():.1f}% success; episode length to success "
        f"mean {lengths.mean():.1f}, median {np.median(lengths):.0f}, max {lengths.max()} steps"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-std", type=float, default=0.0, help="executed-action noise [rad]")
    parser.add_argument("--joint-noise", type=float, default=0.0, help="reset noise around home [rad]")
    args = parser.parse_args()

    env = CubePickEnv(cameras=(), terminate_on_success=True, joint_noise=args.joint_noise)
    expert = ScriptedExpert(env, noise_std=args.noise_std, rng=np.random.default_rng(args.seed))
    start = time.perf_counter()
    random_results = [run_episode(env, expert, args.seed + i) for i in range(args.episodes)]
    failures = [i for i, (s, _) in enumerate(random_results) if not s]
    summarize(f"random positions (seeds {args.seed}..{args.seed + args.episodes - 1})", random_results)
    if failures:
        print("  failed seeds:", [args.seed + i for i in failures])
    eval_results = [run_episode(env, expert, args.seed, xy) for xy in EVAL_POSITIONS]
    summarize("EVAL_POSITIONS", eval_results)
    print(f"wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
