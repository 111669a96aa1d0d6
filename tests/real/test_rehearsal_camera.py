"""The rehearsal's camera timing in franky-sim: a frame shows the scene as it was one camera latency ago (on the
simulated clock), the arm env's timing records the frames' ages, and latency 0 is the instantaneous camera."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from s2robot.real.camera_timing import CameraTiming

pytest.importorskip("franky")
pytest.importorskip("franky_sim")

from s2robot.real.env import FrankaEnv
from s2robot.real.rehearsal import SimulatedFranka

OLD_XY, NEW_XY = (0.5, 0.0), (0.6, 0.15)


def wait_sim(scene: SimulatedFranka, t: float) -> None:
    """Wait until the scene's clock reaches ``t`` [s] (a wall-clock limit only turns a stopped scene into a failure)."""
    give_up = time.monotonic() + 120
    while scene.sim_time < t:
        assert time.monotonic() < give_up, "the rehearsal's physics stopped"
        time.sleep(0.001)


def cube_centre(rgb: np.ndarray) -> np.ndarray:
    """(col, row) [px] of the red cube in a frame."""
    rows, cols = np.nonzero((rgb[..., 0] > 120) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80))
    assert len(rows), "no cube in the frame"
    return np.array([cols.mean(), rows.mean()])


@pytest.fixture
def scene(request: pytest.FixtureRequest) -> Iterator[SimulatedFranka]:
    s = SimulatedFranka(("front",), camera_timing=request.param).start()
    try:
        s.place_cube(OLD_XY)
        wait_sim(s, s.sim_time + 0.5)  # frames of the cube at rest have arrived
        yield s
    finally:
        s.close()


LATENCY = 0.3  # [s]: long, so that a loaded machine cannot delay the first read past it


@pytest.mark.parametrize("scene", [CameraTiming(fps=30, latency_ms=1e3 * LATENCY, jitter_ms=0)], indirect=True)
def test_a_frame_shows_the_scene_one_latency_ago(scene: SimulatedFranka) -> None:
    """Right after the cube moves, the camera still delivers the cube where it was (a frame captured one latency of
    simulated time earlier); once the frames captured after the move have arrived, it shows the cube moved."""
    old = cube_centre(scene.render("front", 64, 64))
    scene.place_cube(NEW_XY)
    moved = scene.sim_time
    shot = scene.frame("front", 64, 64)
    new = cube_centre(scene.render("front", 64, 64))
    assert np.linalg.norm(new - old) > 5  # [px]: the move is visible

    assert shot.captured <= shot.now - LATENCY and shot.captured < moved
    np.testing.assert_allclose(cube_centre(shot.rgb), old, atol=0.5)  # the earlier state's frame

    wait_sim(scene, moved + LATENCY + 1 / 30 + 0.002)  # a frame captured after the move has arrived
    later = scene.frame("front", 64, 64)
    assert later.captured >= moved and LATENCY <= later.now - later.captured <= LATENCY + 1 / 30 + 0.002
    np.testing.assert_allclose(cube_centre(later.rgb), new, atol=0.5)


@pytest.mark.parametrize("scene", [CameraTiming(latency_ms=0, jitter_ms=0)], indirect=True)
def test_latency_zero_shows_the_scene_at_the_read(scene: SimulatedFranka) -> None:
    scene.place_cube(NEW_XY)
    shot, now = scene.frame("front", 64, 64), scene.render("front", 64, 64)
    assert shot.captured == shot.now and scene.frames is None
    np.testing.assert_allclose(cube_centre(shot.rgb), cube_centre(now), atol=0.5)
    assert scene.frame("front", 64, 64).index != shot.index  # an instantaneous camera renders a new frame per read


def episode_frame_ages(**camera: float) -> dict:
    """The timing summary of a 10-step episode of the arm env in franky-sim (zero actions)."""
    env = FrankaEnv(host="franky-sim", cameras=["front"], image_size=32, max_steps=10, **camera)
    try:
        env.reset(seed=3, options={"cube_xy": OLD_XY})
        for _ in range(10):
            *_, info = env.step(np.zeros(8, np.float32))
        return info["timing"]
    finally:
        env.close()


def test_the_arm_env_records_its_frames_ages_within_the_camera_timing() -> None:
    """By default a RealSense's timing (30 fps, 50 ± 15 ms): every observation's frame is at least 35 ms and at most
    50 + 15 + 33.3 ms old on the simulated clock; off, every frame is of the moment of the read."""
    timing = episode_frame_ages()
    assert timing["steps"] == 10
    assert 35 <= timing["frame_age_p50_ms"] <= timing["frame_age_p99_ms"] <= 50 + 15 + 1e3 / 30 + 1
    off = episode_frame_ages(camera_latency_ms=0, camera_jitter_ms=0)
    assert off["frame_age_p50_ms"] == off["frame_age_p99_ms"] == 0


def test_the_first_frame_of_an_episode_shows_the_cube_where_it_was_placed() -> None:
    """With a RealSense's delays, reset waits for a frame captured after it placed the cube: the first observation of
    the next episode shows the new cube, not the one of the episode before (demos and evaluations would otherwise
    start from a frame of the wrong cube)."""
    env = FrankaEnv(host="franky-sim", cameras=["front"], image_size=64, max_steps=10)
    try:
        env.reset(seed=3, options={"cube_xy": OLD_XY})
        before = cube_centre(env.scene.render("front", 64, 64))
        obs, _ = env.reset(seed=4, options={"cube_xy": NEW_XY})
        placed = cube_centre(env.scene.render("front", 64, 64))
        assert np.linalg.norm(placed - before) > 5  # [px]: the move is visible
        np.testing.assert_allclose(cube_centre(obs["front"]), placed, atol=1.0)
    finally:
        env.close()


def test_the_cube_pick_look_changes_what_the_camera_sees_and_not_the_physics() -> None:
    """rehearsal_look="cube-pick" shows the simulated env's wooden table where franky-sim shows its blue ground; the
    bodies that collide are the same and the cube rests at the same height (on franky-sim's ground, not drawn)."""
    seen, colliding, rest = {}, {}, {}
    for look in ("franky-sim", "cube-pick"):
        with SimulatedFranka(("front",), look=look) as s:
            s.place_cube(OLD_XY)
            wait_sim(s, s.sim_time + 0.3)
            rest[look] = s.cube_pose()[0]
            seen[look] = s.render("front", 64, 64)[48:].reshape(-1, 3).mean(axis=0)  # the table or ground, below
            m = s._sim.model
            collides = (m.geom_contype != 0) | (m.geom_conaffinity != 0)
            colliding[look] = sorted(m.body(int(b)).name for b in m.geom_bodyid[collides])
    r, g, b = seen["franky-sim"]
    assert b > r + 30, f"franky-sim's ground is blue, got mean RGB {seen['franky-sim']}"
    r, g, b = seen["cube-pick"]
    assert r > g > b and r > b + 40, f"the simulated env's table is wood-coloured, got mean RGB {seen['cube-pick']}"
    assert colliding["franky-sim"] == colliding["cube-pick"]
    np.testing.assert_allclose(rest["cube-pick"], rest["franky-sim"], atol=1e-4)
    with pytest.raises(ValueError, match="unknown rehearsal look 'studio'"):
        SimulatedFranka(look="studio")
