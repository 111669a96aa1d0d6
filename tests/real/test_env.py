"""The Franka env in franky-sim: spaces as CubePickEnv, reset, stepping, refusals and stops, timing, close."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("franky")
pytest.importorskip("franky_sim")

import envs
from s2robot.real.camera import CameraError
from s2robot.real.env import HOME_Q, FrankaEnv

CUBE_XY = (0.5, 0.1)
MAX_STEPS = 8
DELTA = np.r_[0.0, 0.1, 0.0, -0.1, 0.0, 0.0, 0.0]  # one full step on two joints [rad]


def action(delta: np.ndarray | None = None, gripper: float = 0.0) -> np.ndarray:
    return np.r_[np.zeros(7) if delta is None else delta, gripper].astype(np.float32)


def wait_robot(env: FrankaEnv, seconds: float) -> None:
    """Wait ``seconds`` on the robot's clock (franky-sim may run slower than real time)."""
    end, give_up = env.arm.time() + seconds, time.monotonic() + 10 * seconds + 5
    while env.arm.time() < end and time.monotonic() < give_up:
        time.sleep(0.005)


def assert_stopped(env: FrankaEnv, target: np.ndarray) -> None:
    """No motion runs, the joints stand still after 0.5 s (robot clock), short of the target the step was heading to."""
    wait_robot(env, 0.5)
    robot = env.arm.robot
    assert not robot.is_in_control
    assert np.abs(np.asarray(robot.state.dq)).max() < 1e-2
    assert np.abs(env.arm.joint_positions() - target).max() > 0.03  # a running motion would have got there


@pytest.fixture(scope="module")
def env() -> Iterator[FrankaEnv]:
    e = FrankaEnv(host="franky-sim", cameras=["front"], image_size=32, max_steps=MAX_STEPS)
    yield e
    e.close()


def test_spaces_match_simulated_env(env: FrankaEnv) -> None:
    """Observation keys, shapes, dtypes and the action space are CubePickEnv's (proprio and action (8,))."""
    sim = envs.CubePickEnv(cameras=["front"], image_size=32, render_mode=None)
    try:
        assert set(env.observation_space.spaces) == set(sim.observation_space.spaces) == {"front", "proprio"}
        for key, space in sim.observation_space.spaces.items():
            assert env.observation_space[key].shape == space.shape
            assert env.observation_space[key].dtype == space.dtype
        assert env.observation_space["proprio"].shape == (8,)
        assert env.action_space.shape == sim.action_space.shape == (8,)
        assert env.action_space.dtype == sim.action_space.dtype
        np.testing.assert_allclose(env.action_space.low, sim.action_space.low)
        np.testing.assert_allclose(env.action_space.high, sim.action_space.high)
        _, sim_info = sim.reset(seed=0)
    finally:
        sim.close()
    obs, info = env.reset(options={"cube_xy": CUBE_XY})
    assert set(sim_info) <= set(info)
    assert env.observation_space.contains(obs)


def test_reset_places_cube_and_arm(env: FrankaEnv) -> None:
    """Reset puts the cube at options' cube_xy (2 mm) on the table and the arm at home (0.02 rad), hand open."""
    obs, info = env.reset(options={"cube_xy": CUBE_XY})
    np.testing.assert_allclose(info["cube_pos"][:2], CUBE_XY, atol=2e-3)
    assert info["cube_pos"][2] == pytest.approx(0.02, abs=2e-3)
    np.testing.assert_allclose(obs["proprio"][:7], HOME_Q, atol=0.02)
    assert obs["proprio"][7] > 0.07  # fingers open [m]
    np.testing.assert_array_equal(info["arm_target"], HOME_Q)
    assert obs["front"].shape == (32, 32, 3) and obs["front"].dtype == np.uint8 and obs["front"].std() > 0
    assert info["clipped_steps"] == 0 and info["safety"] == {"step": 0, "joint_limit": 0, "workspace": 0,
                                                        "planner_restarts": 0}


def test_zero_action_keeps_target(env: FrankaEnv) -> None:
    """A zero delta keeps the commanded target exactly; the arm stays at it."""
    env.reset(options={"cube_xy": CUBE_XY})
    for _ in range(2):
        obs, reward, terminated, truncated, info = env.step(action())
        np.testing.assert_array_equal(info["arm_target"], HOME_Q)
    np.testing.assert_allclose(obs["proprio"][:7], HOME_Q, atol=0.02)
    assert reward == 0.0 and not terminated and not truncated


def test_delta_moves_towards_target_and_times_episode(env: FrankaEnv) -> None:
    """After one delta and holding it 5 steps, |q − target| < 0.08 rad; the truncating step's info has timing."""
    env.reset(options={"cube_xy": CUBE_XY})
    target = np.asarray(HOME_Q) + DELTA
    _, _, _, _, info = env.step(action(DELTA))
    np.testing.assert_allclose(info["arm_target"], target, atol=1e-6)
    assert info["clipped_steps"] == 0
    for _ in range(5):
        obs, _, _, truncated, info = env.step(action())
        assert "timing" not in info and not truncated
    # Idle, the arm is within 0.005 rad of the target by now; under CPU load franky-sim was seen to overshoot by
    # 0.057 rad (physics and client threads on 2 cores): 0.08 rad, and each moved joint went ≥ 0.05 rad its way.
    q = obs["proprio"][:7].astype(np.float64)
    assert np.abs(q - target).max() < 0.08
    assert np.all((q - np.asarray(HOME_Q))[[1, 3]] * DELTA[[1, 3]] > 0.05 * 0.1)
    np.testing.assert_allclose(info["fingertip_pos"], envs_fk(obs["proprio"][:7]), atol=1e-6)
    for _ in range(MAX_STEPS - 6):
        _, _, _, truncated, info = env.step(action())
    assert truncated
    assert info["timing"]["steps"] == MAX_STEPS
    timing = info["timing"]  # paced on the robot's clock: 100 ms periods, late steps each skip ≥ 1 period
    # the robot time is read after each send, so a send that is slow one step and quick the next moves single
    # periods by its jitter: franky-sim on 2 idle cores gave a p50 of 90 ms in 1 of 3 runs (the grid is 100 ms)
    assert 85.0 <= timing["robot_period_p50_ms"] <= 100.0 * (1 + timing["skipped_periods"]) + 50.0
    assert timing["missed_deadlines"] <= timing["skipped_periods"] <= MAX_STEPS * 10


def envs_fk(q: np.ndarray) -> np.ndarray:
    from s2robot.real.kinematics import fingertip_pose

    return fingertip_pose(np.asarray(q, dtype=np.float64))[:3, 3]


def test_nan_action_stops_arm(env: FrankaEnv) -> None:
    """A NaN action mid-motion is a ValueError, the running motion is stopped, the target kept; reset works after."""
    env.reset(options={"cube_xy": CUBE_XY})
    target = np.asarray(HOME_Q) + DELTA
    env.step(action(DELTA))  # the arm is now on its way (one step behind)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.full(8, np.nan, dtype=np.float32))
    np.testing.assert_allclose(env.arm_target, target, atol=1e-6)
    assert_stopped(env, target)
    obs, _ = env.reset(options={"cube_xy": CUBE_XY})
    np.testing.assert_allclose(obs["proprio"][:7], HOME_Q, atol=0.02)


def test_wrong_shape_refused(env: FrankaEnv) -> None:
    """A (7,) action is a ValueError naming the shape; nothing is sent."""
    env.reset(options={"cube_xy": CUBE_XY})
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(7, dtype=np.float32))
    np.testing.assert_array_equal(env.arm_target, HOME_Q)


@pytest.mark.parametrize("error", [CameraError("camera 'front' stalled"), KeyboardInterrupt()])
def test_error_inside_step_stops_arm(env: FrankaEnv, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """A camera that stops delivering, or Ctrl-C, inside a step propagates and the arm is stopped."""
    env.reset(options={"cube_xy": CUBE_XY})
    target = np.asarray(HOME_Q) + DELTA

    def read() -> None:
        raise error

    monkeypatch.setattr(env._cameras["front"], "read", read)
    with pytest.raises(type(error)):
        env.step(action(DELTA))
    assert_stopped(env, target)
    monkeypatch.undo()
    env.reset(options={"cube_xy": CUBE_XY})


def test_absolute_mode_clips_past_joint_limit() -> None:
    """In absolute mode a target past a joint limit is clipped to the shrunk limit and counted; close twice is fine."""
    home = np.asarray(HOME_Q).copy()
    home[6] = 2.9  # joint 7 near its upper limit (FR3: 3.0159 − 0.05 margin); turning it keeps the fingertip
    e = FrankaEnv(host="franky-sim", cameras=[], max_steps=3, action_mode="absolute", home_q=home.tolist())
    try:
        limit = e.filter.limits[6, 1]
        _, info = e.reset(options={"cube_xy": CUBE_XY})
        target = home.copy()
        target[6] = 3.5
        _, _, _, _, info = e.step(np.r_[target, 0.0].astype(np.float32))
        assert info["arm_target"][6] == pytest.approx(limit, abs=1e-6)
        np.testing.assert_allclose(info["arm_target"][:6], home[:6], atol=1e-6)
        assert info["clipped_steps"] == 1
        far = home.copy()
        far[0] += 0.5  # within limits, more than one step away
        _, _, _, _, info = e.step(np.r_[far, 0.0].astype(np.float32))
        assert info["arm_target"][0] == pytest.approx(home[0] + 0.1, abs=1e-6)
        assert info["clipped_steps"] == 2 and info["safety"]["step"] == 1
    finally:
        e.close()
        e.close()


def test_a_home_pose_outside_the_workspace_is_refused_before_connecting() -> None:
    """The reset move to home is not filtered, so a home whose fingertip leaves the box is refused up front."""
    box = [0.25, 0.80, -0.40, 0.40, 0.55, 0.65]  # the home fingertip sits ~0.49 m up: z_min above it
    with pytest.raises(ValueError, match=r"outside safety\.workspace"):
        FrankaEnv(host="192.0.2.1", cameras=[], safety={"workspace": box})


def test_names_and_home_pose_shared_with_the_simulated_side_agree() -> None:
    """The arm env's registered id, rehearsal host and home pose are the ones the sim side and the MJCF use."""
    import envs
    from s2robot.real.env import SIM_HOST
    from s2robot.sim.env import ARM_ENV_ID, REHEARSAL_HOST

    assert envs.FRANKA_REAL_ID == ARM_ENV_ID and SIM_HOST == REHEARSAL_HOST
    np.testing.assert_allclose(HOME_Q, envs.CubePickEnv(cameras=[]).home_qpos, atol=1e-12)
