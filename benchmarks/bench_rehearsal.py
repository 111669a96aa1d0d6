"""Benchmark the franky-sim rehearsal's two per-episode costs side by side: a camera frame's render with franky-sim's
8× multisampling against none (what ``SimulatedFranka`` renders with), and a reset's move home at two speeds.

Usage: python benchmarks/bench_rehearsal.py [--size 224] [--renders 20] [--resets 3] [--speeds 0.4 0.8]

Renders: the front camera at size², median of ``--renders`` after a warm-up, alternated 3 times; prints both medians,
their ratio and the mean pixel difference. Resets: each speed runs ``--resets`` scripted-expert episodes in franky-sim;
after each, ``FrankaEnv.reset`` (open the hand, move home, place the cube, wait for a frame showing it) is timed on the
robot's clock and the wall clock. Needs the dev extra (franky, franky-sim) and MUJOCO_GL=egl on a headless machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from s2robot.real.rehearsal import SimulatedFranka
from s2robot.sim.env import ARM_ENV_ID, EnvConfig, make_env


def render_ms(size: int, renders: int) -> None:
    import mujoco

    with SimulatedFranka(("front",)) as scene:
        model, data = scene._sim.model, scene._sim.data
        renderers = {}
        for samples in (8, 0):  # the context reads the model's offsamples when it is made
            model.vis.quality.offsamples = samples
            renderers[samples] = mujoco.Renderer(model, size, size)
        times: dict[int, list[float]] = {8: [], 0: []}
        frames = {}
        for _ in range(3):
            for samples, renderer in renderers.items():
                for i in range(renders + 1):
                    t = time.perf_counter()
                    with scene._lock:
                        renderer.update_scene(data, camera="front")
                        frames[samples] = renderer.render()
                    if i:  # the first is a warm-up
                        times[samples].append(time.perf_counter() - t)
        ms = {s: 1000 * float(np.median(v)) for s, v in times.items()}
        diff = float(np.abs(frames[8].astype(int) - frames[0].astype(int)).mean())
        print(f"render {size}²: 8× multisampling {ms[8]:.1f} ms, none {ms[0]:.1f} ms ({ms[8] / ms[0]:.2f}×); "
              f"mean pixel difference {diff:.2f}/255")


def reset_s(speed: float, resets: int) -> tuple[float, float]:
    """Mean (robot-clock, wall) seconds of a reset after a scripted pick, the move home at ``speed``."""
    cfg = EnvConfig(id=ARM_ENV_ID, options={"host": "franky-sim", "safety": {"home_speed": speed}}, max_steps=90)
    env = make_env(cfg, render_mode=None)
    arm, took = env.unwrapped.arm, []
    try:
        obs, info = env.reset(seed=100)
        for seed in range(resets):
            expert, done = env.unwrapped.make_expert(0.0, None), False
            while not done:
                a = expert.act(obs, info)
                obs, _, terminated, truncated, info = env.step(a.executed)
                done = terminated or truncated
            robot, wall = arm.time(), time.perf_counter()
            obs, info = env.reset(seed=seed)
            took.append((arm.time() - robot, time.perf_counter() - wall))
    finally:
        env.close()
    return tuple(np.mean(took, axis=0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--renders", type=int, default=20)
    p.add_argument("--resets", type=int, default=3)
    p.add_argument("--speeds", type=float, nargs="+", default=[0.4, 0.8])
    args = p.parse_args()
    render_ms(args.size, args.renders)
    took = {s: reset_s(s, args.resets) for s in args.speeds}
    for s, (robot, wall) in took.items():
        print(f"reset, move home at {s}: {robot:.2f} s robot clock, {wall:.2f} s wall (mean of {args.resets})")
    first, last = args.speeds[0], args.speeds[-1]
    print(f"reset at {last} / at {first}: {took[last][0] / took[first][0]:.2f}× on the robot clock")


if __name__ == "__main__":
    main()
