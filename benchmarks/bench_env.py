"""Benchmark CubePickEnv control steps/s against its own floor: bare mj_step physics + bare rendering; and the
cost of scene variation against the scene as built.

Usage: MUJOCO_GL=egl python benchmarks/bench_env.py [--steps 300] [--image-size 224] [--repeats 3]
           [--variations standard visual:high image_jpeg:high]
For each camera setting the env runs `steps` random-action control steps; the floor replays the very same
controls through `mujoco.mj_step(nstep=50)` on a bare MjData, plus `Renderer.update_scene + render` per
camera, so `env / floor` is the env's own overhead (target ≤ 1.10). Then, with the front camera, each scene
variation runs the same steps over episodes of 20 steps (a new scene each), interleaved with the scene as built:
`variation / none` is what varying the scene costs (target ≤ 1.10 for `standard`).
"""

import argparse
import time

import mujoco
import numpy as np

from envs import CubePickEnv


def time_variation(spec: str, steps: int, size: int, episode: int = 20) -> float:
    """Seconds per control step with the front camera, a new episode (and scene of ``spec``) every ``episode``
    steps, resets included."""
    env = CubePickEnv(cameras=("front",), image_size=size, max_steps=episode + 1)
    rng = np.random.default_rng(0)
    actions = rng.uniform(env.action_space.low, env.action_space.high, size=(steps, 8)).astype(np.float32)
    actions[:, :7] *= 0.3
    options = {"variation": spec}
    env.reset(seed=0, options=options)
    env.step(actions[0])  # warm up: creates the renderer
    start = time.perf_counter()
    for i, a in enumerate(actions):
        if i % episode == 0:
            env.reset(seed=i, options=options)
        env.step(a)
    elapsed = time.perf_counter() - start
    env.close()
    return elapsed / steps


def time_env(cameras: tuple[str, ...], steps: int, size: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Seconds per env step; also the initial (qpos, act) and every step's ctrl, (steps, nu), to replay."""
    env = CubePickEnv(cameras=cameras, image_size=size, max_steps=steps + 1)
    rng = np.random.default_rng(0)
    actions = rng.uniform(env.action_space.low, env.action_space.high, size=(steps, 8)).astype(np.float32)
    actions[:, :7] *= 0.3  # wander around home instead of slamming into the joint limits
    env.reset(seed=0)
    env.step(actions[0])  # warm up: creates the renderers
    env.reset(seed=0)
    start_state = (env.data.qpos.copy(), env.data.act.copy())
    ctrls = np.empty((steps, env.model.nu))
    start = time.perf_counter()
    for i, a in enumerate(actions):
        env.step(a)
        ctrls[i] = env.data.ctrl  # the bookkeeping copy costs ~1 µs, charged to the env
    elapsed = time.perf_counter() - start
    env.close()
    return elapsed / steps, start_state, ctrls


def time_physics(start_state: tuple[np.ndarray, np.ndarray], ctrls: np.ndarray) -> float:
    """Seconds per control step of bare mj_step over the same substeps and controls."""
    env = CubePickEnv(cameras=())  # only for the model and n_substeps
    model, data = env.model, mujoco.MjData(env.model)
    data.qpos, data.act = start_state
    mujoco.mj_forward(model, data)
    start = time.perf_counter()
    for ctrl in ctrls:
        data.ctrl = ctrl
        mujoco.mj_step(model, data, nstep=env.n_substeps)
    return (time.perf_counter() - start) / len(ctrls)


def time_render(camera: str, size: int, frames: int) -> float:
    """Seconds per frame of a bare mujoco.Renderer (update_scene + render) at size x size."""
    env = CubePickEnv(cameras=())
    env.reset(seed=0)
    renderer = mujoco.Renderer(env.model, height=size, width=size)
    renderer.update_scene(env.data, camera=camera)
    renderer.render()  # warm up
    start = time.perf_counter()
    for _ in range(frames):
        renderer.update_scene(env.data, camera=camera)
        renderer.render()
    elapsed = (time.perf_counter() - start) / frames
    renderer.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="control steps per setting")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="timings per number; the minimum is reported")
    parser.add_argument("--variations", nargs="*", default=["standard", "visual:high"],
                        help="scene variations timed against none (envs.variation specs)")
    args = parser.parse_args()
    size = args.image_size

    # Best of `repeats` for every number, each repeat timing env, physics and rendering back to back: this
    # machine is shared, and the minimum of interleaved runs is the least disturbed comparison.
    header = ("setting", "env steps/s", "floor steps/s", "physics ms", "render ms", "env/floor")
    print(f"{header[0]:<22}" + "".join(f"{h:>15}" for h in header[1:]))
    settings = {"no camera": (), f"front {size}": ("front",), f"front+wrist {size}": ("front", "wrist")}
    for label, cameras in settings.items():
        env_s, physics_s, render_s = np.inf, np.inf, np.inf
        for _ in range(args.repeats):
            env_run, start_state, ctrls = time_env(cameras, args.steps, size)
            env_s = min(env_s, env_run)
            physics_s = min(physics_s, time_physics(start_state, ctrls))
            render_s = min(render_s, sum(time_render(cam, size, args.steps) for cam in cameras))
        floor_s = physics_s + render_s
        print(
            f"{label:<22}{1 / env_s:>15.1f}{1 / floor_s:>15.1f}{1e3 * physics_s:>15.3f}"
            f"{1e3 * render_s:>15.2f}{env_s / floor_s:>15.3f}"
        )
    if args.variations:
        print(f"\n{'variation (front ' + str(size) + ')':<26}{'ms/step':>10}{'none ms':>10}{'ratio':>8}")
        for spec in args.variations:
            best, none = np.inf, np.inf
            for _ in range(args.repeats):  # interleaved with the scene as built, best of each
                none = min(none, time_variation("none", args.steps, size))
                best = min(best, time_variation(spec, args.steps, size))
            print(f"{spec:<26}{1e3 * best:>10.2f}{1e3 * none:>10.2f}{best / none:>8.3f}")


if __name__ == "__main__":
    main()
