"""CubePickEnv: gymnasium contract, action handling, determinism, cube placement and success detection."""

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import (
    CUBE_REST_Z,
    EVAL_POSITIONS,
    LIFT_SUCCESS_HEIGHT,
    MAX_JOINT_DELTA,
    WORKSPACE,
    CubePickEnv,
    ScriptedExpert,
)


@pytest.fixture
def env() -> CubePickEnv:
    env = CubePickEnv(cameras=())
    yield env
    env.close()


def _zero_action(gripper: float = 0.0) -> np.ndarray:
    return np.r_[np.zeros(7), gripper].astype(np.float32)


def test_registered_and_makeable() -> None:
    """gymnasium.make builds the env by id, with constructor kwargs."""
    env = gym.make(envs.CUBE_PICK_ID, cameras=[], max_steps=7)
    assert isinstance(env.unwrapped, CubePickEnv) and env.unwrapped.max_steps == 7
    env.close()


def test_check_env_passes() -> None:
    """gymnasium's env checker accepts the env with two cameras."""
    env = gym.make(envs.CUBE_PICK_ID, cameras=("front", "wrist"), image_size=32, render_size=(48, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped, skip_render_check=False)
    env.close()


def test_spaces_and_observation_layout() -> None:
    """Observations hold proprio (8,) float32 and one (S, S, 3) uint8 image per requested camera only."""
    env = CubePickEnv(cameras=("wrist",), image_size=40)
    obs, info = env.reset(seed=0)
    assert set(obs) == {"proprio", "wrist"} == set(env.observation_space.spaces)
    assert obs["proprio"].shape == (8,) and obs["proprio"].dtype == np.float32
    assert obs["wrist"].shape == (40, 40, 3) and obs["wrist"].dtype == np.uint8
    assert obs["wrist"].std() > 5  # a real picture, not a blank buffer
    assert obs in env.observation_space
    np.testing.assert_allclose(obs["proprio"][:7], env.home_qpos, atol=1e-6)
    assert obs["proprio"][7] == pytest.approx(0.08)  # fully open: pads 2 x 0.04 m apart
    assert env.action_space.shape == (8,) and env.action_space.dtype == np.float32
    np.testing.assert_allclose(env.action_space.high, [MAX_JOINT_DELTA] * 7 + [1.0])
    assert set(info) >= {"cube_pos", "cube_quat", "fingertip_pos", "is_success", "is_grasped"}
    frame = env.render()
    assert frame.shape == (*env.render_size, 3) and frame.dtype == np.uint8
    for _ in range(3):
        env.step(np.zeros(8, dtype=np.float32))
        env.render()
    assert len(env._renderers) == 2  # one per image size, created once and reused
    env.close()
    assert len(env._renderers) == 0


def test_same_seed_same_episode_bit_for_bit() -> None:
    """Two envs reset with the same seed and fed the same actions produce identical observations."""
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.05, 0.05, size=(5, 8)).astype(np.float32)
    actions[:, 7] = np.abs(actions[:, 7]) * 10
    runs = []
    for _ in range(2):
        env = CubePickEnv(cameras=("front",), image_size=32, joint_noise=0.05)
        obs, info = env.reset(seed=123)
        trace = [obs["proprio"], obs["front"], info["cube_pos"]]
        for a in actions:
            obs, _, _, _, info = env.step(a)
            trace += [obs["proprio"], obs["front"], info["cube_pos"]]
        runs.append(trace)
        env.close()
    for x, y in zip(*runs, strict=True):
        assert np.array_equal(x, y)
    env = CubePickEnv(cameras=(), joint_noise=0.05)
    _, info_a = env.reset(seed=123)
    _, info_b = env.reset(seed=124)
    assert not np.array_equal(info_a["cube_pos"], info_b["cube_pos"])


def test_cube_xy_option_places_the_cube_exactly(env) -> None:
    """options={'cube_xy': (x, y)} puts the cube centre exactly there, resting on the table, unrotated."""
    for xy in [(0.45, -0.1), EVAL_POSITIONS[3]]:
        _, info = env.reset(seed=0, options={"cube_xy": xy})
        assert tuple(info["cube_pos"]) == (xy[0], xy[1], CUBE_REST_Z)
        assert tuple(info["cube_quat"]) == (1.0, 0.0, 0.0, 0.0)


def test_random_cube_positions_cover_the_workspace(env) -> None:
    """Without cube_xy the cube is drawn inside WORKSPACE, spread over it."""
    xy = np.array([env.reset(seed=s)[1]["cube_pos"][:2] for s in range(40)])
    assert all(WORKSPACE.contains(p) for p in xy)
    assert np.ptp(xy[:, 0]) > 0.5 * (WORKSPACE.x_max - WORKSPACE.x_min)
    assert np.ptp(xy[:, 1]) > 0.5 * (WORKSPACE.y_max - WORKSPACE.y_min)


def test_eval_positions_are_16_distinct_points_in_the_workspace() -> None:
    """EVAL_POSITIONS is a frozen list of 16 distinct (x, y) inside WORKSPACE."""
    assert len(EVAL_POSITIONS) == 16 and len(set(EVAL_POSITIONS)) == 16
    assert all(len(p) == 2 and WORKSPACE.contains(p) for p in EVAL_POSITIONS)


def test_bad_actions_raise_value_error(env) -> None:
    """Wrong shapes and non-finite values are rejected with a message naming the problem."""
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(8,\).*\(7,\)"):
        env.step(np.zeros(7))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((1, 8)))
    for bad in (np.nan, np.inf, -np.inf):
        action = _zero_action()
        action[2] = bad
        with pytest.raises(ValueError, match=r"finite.*\[2\]"):
            env.step(action)


def test_out_of_range_actions_are_clipped(env) -> None:
    """Deltas beyond ±MAX_JOINT_DELTA and gripper commands beyond [0, 1] are clipped, not rejected."""
    env.reset(seed=0)
    before = env.arm_target
    env.step(np.array([1.0, -1.0, 0.02, 0, 0, 0, 0, 5.0], dtype=np.float32))
    np.testing.assert_allclose(env.arm_target - before, [0.1, -0.1, 0.02, 0, 0, 0, 0], atol=1e-7)
    assert env.data.ctrl[env.model.actuator("gripper").id] == 0.0  # command 5 → 1 → fully closed
    *_, info = env.step(np.array([0, 0, 0, 0, 0, 0, 0, -3.0], dtype=np.float32))
    assert env.data.ctrl[env.model.actuator("gripper").id] == pytest.approx(0.04)
    assert info["clipped_steps"] == 2
    *_, info = env.step(_zero_action())
    assert info["clipped_steps"] == 2 and np.array_equal(info["arm_target"], env.arm_target)


def test_absolute_targets_keep_the_per_step_bound_and_count_clips() -> None:
    """action_mode="absolute": a target more than MAX_JOINT_DELTA from the commanded position moves only that far."""
    env = CubePickEnv(cameras=(), action_mode="absolute")
    env.reset(seed=0)
    before = env.arm_target
    far = np.r_[before + np.array([0.5, -0.5, 0.03, 0, 0, 0, 0]), 1.0].astype(np.float32)
    *_, info = env.step(far)
    np.testing.assert_allclose(env.arm_target - before, [0.1, -0.1, 0.03, 0, 0, 0, 0], atol=1e-6)
    assert info["clipped_steps"] == 1
    with pytest.raises(ValueError, match="action_mode must be one of"):
        CubePickEnv(cameras=(), action_mode="velocity")


def test_absolute_targets_round_trip_through_the_env() -> None:
    """A noisy expert episode run with deltas, replayed as the commanded absolute targets it produced, is the same
    episode: the same joint trajectory (to float32 rounding of the targets) and the same success."""
    delta = CubePickEnv(cameras=(), terminate_on_success=True)
    obs, info = delta.reset(seed=3)
    expert = ScriptedExpert(delta, noise_std=0.02, rng=np.random.default_rng(3))
    targets, proprio, done = [], [obs["proprio"]], False
    while not done:
        step = expert.act(obs, info)
        base = info["arm_target"]
        targets.append(np.r_[base + step.executed[:7], step.executed[7]].astype(np.float32))
        obs, _, term, trunc, info = delta.step(step.executed)
        proprio.append(obs["proprio"])
        done = term or trunc
    assert info["is_success"]
    absolute = CubePickEnv(cameras=(), terminate_on_success=True, action_mode="absolute")
    obs, info = absolute.reset(seed=3)
    replay = [obs["proprio"]]
    for target in targets:
        obs, _, term, trunc, info = absolute.step(target)
        replay.append(obs["proprio"])
    assert info["is_success"] and term
    np.testing.assert_allclose(np.array(replay), np.array(proprio), atol=1e-4)


def test_arm_target_stays_within_joint_limits(env) -> None:
    """Pushing a joint past its limit saturates the commanded target at the limit."""
    env.reset(seed=0)
    for _ in range(40):  # q4 starts at -2.356; 40 x 0.1 rad would pass its -3.0718 limit
        env.step(np.array([0, 0, 0, -0.1, 0, 0, 0, 0], dtype=np.float32))
    assert env.arm_target[3] == pytest.approx(env.joint_limits[3, 0])


def test_unknown_camera_lists_the_available_ones() -> None:
    """A misspelt camera name fails at construction with the list of cameras in the scene."""
    with pytest.raises(ValueError, match="fornt") as error:
        CubePickEnv(cameras=("front", "fornt"))
    assert "available cameras" in str(error.value)
    assert all(f"'{name}'" in str(error.value) for name in envs.CAMERAS)


def test_bad_constructor_and_reset_arguments(env) -> None:
    """Bad sizes, step counts and reset options are rejected with a clear message."""
    with pytest.raises(ValueError, match="image_size"):
        CubePickEnv(cameras=(), image_size=0)
    with pytest.raises(ValueError, match="max_steps"):
        CubePickEnv(cameras=(), max_steps=0)
    with pytest.raises(ValueError, match="cube_xyz"):
        env.reset(options={"cube_xyz": (0.5, 0.0, 0.1)})
    with pytest.raises(ValueError, match="cube_xy"):
        env.reset(options={"cube_xy": (0.5, float("nan"))})


def test_truncates_after_max_steps() -> None:
    """The episode is truncated (not terminated) at max_steps."""
    env = CubePickEnv(cameras=(), max_steps=3)
    env.reset(seed=0)
    flags = [env.step(_zero_action())[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_one_second_of_random_actions_raises_no_warnings(env) -> None:
    """Random in-range actions through the env for 1 s leave MuJoCo's warning counters at zero."""
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(10):
        env.step(env.action_space.sample())
    assert [w.number for w in env.data.warning] == [0] * len(env.data.warning)


def test_held_lift_is_a_success() -> None:
    """Grasping and lifting the cube ≥ 5 cm (the scripted expert does it) is detected as success."""
    env = CubePickEnv(cameras=(), terminate_on_success=True)
    expert = ScriptedExpert(env)
    obs, info = env.reset(seed=0, options={"cube_xy": (0.5, 0.05)})
    expert.reset()
    was_grasped_below_threshold = False
    for _ in range(env.max_steps):
        obs, reward, terminated, truncated, info = env.step(expert(obs, info))
        if info["is_grasped"] and info["lift_height"] < LIFT_SUCCESS_HEIGHT:
            was_grasped_below_threshold = True
            assert not info["is_success"]
        if terminated or truncated:
            break
    assert terminated and info["is_success"] and reward == 1.0
    assert was_grasped_below_threshold
    assert info["is_grasped"] and info["lift_height"] >= LIFT_SUCCESS_HEIGHT


def test_cube_flung_upward_is_not_a_success(env) -> None:
    """A cube thrown up while the (closed) gripper is far away is never a success, however high it flies."""
    _, info = env.reset(seed=0, options={"cube_xy": (0.5, -0.15)})
    env.data.joint("cube_joint").qvel[:3] = (0.0, 0.0, 2.0)  # ~20 cm ballistic hop [m/s]
    peak = 0.0
    for _ in range(4):
        _, reward, terminated, _, info = env.step(_zero_action(gripper=1.0))
        peak = max(peak, info["lift_height"])
        assert not info["is_success"] and reward == 0.0 and not terminated
    assert peak > 2 * LIFT_SUCCESS_HEIGHT  # it really flew above the success height


def test_envs_never_imports_torch() -> None:
    """Importing envs (env + expert) in a fresh interpreter loads mujoco but not torch."""
    code = "import sys, envs; assert 'mujoco' in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_action_delay_hands_the_servos_each_command_one_step_late() -> None:
    """action_delay=1: the joints follow the commands one control step late, exactly as without delay behind one
    held step; the commanded target (``arm_target``) is the newest command, and the gripper waits too."""
    rng = np.random.default_rng(0)
    actions = [np.r_[rng.uniform(-0.05, 0.05, 7), float(t >= 4)].astype(np.float32) for t in range(8)]
    late, now = CubePickEnv(cameras=(), action_delay=1), CubePickEnv(cameras=())
    obs_late, _ = late.reset(seed=5)
    obs_now, _ = now.reset(seed=5)
    np.testing.assert_array_equal(obs_late["proprio"], obs_now["proprio"])
    obs_now, *_ = now.step(_zero_action())  # the step the servos of the delayed env still hold the reset pose
    for t, action in enumerate(actions):
        obs_late, *_ = late.step(action)
        np.testing.assert_array_equal(obs_late["proprio"], obs_now["proprio"])
        np.testing.assert_allclose(late.arm_target, now.home_qpos + np.sum(actions[:t + 1], axis=0)[:7], atol=1e-6)
        if t + 1 < len(actions):
            obs_now, *_ = now.step(action)
    gripper = late.model.actuator("gripper").id
    assert late.data.ctrl[gripper] == pytest.approx(0.0)  # closed since step 4, applied from step 5
    late.reset(seed=5)  # a new episode starts with nothing pending
    assert late.data.ctrl[gripper] == pytest.approx(0.04)
    for bad in (-1, 6, 1.5):
        with pytest.raises(ValueError, match=r"action_delay must be an int in \[0, 5\]"):
            CubePickEnv(cameras=(), action_delay=bad)


def test_the_expert_still_picks_with_a_one_step_action_delay() -> None:
    """The scripted expert closes its loop on the fingertip, so it lifts the cube when the arm follows one step late
    (as a Franka through franky does), in more steps."""
    env = CubePickEnv(cameras=(), action_delay=1)
    expert = ScriptedExpert(env)
    for xy in EVAL_POSITIONS[:3]:
        obs, info = env.reset(seed=0, options={"cube_xy": xy})
        expert.reset()
        for _ in range(env.max_steps):
            obs, _, terminated, truncated, info = env.step(expert(obs, info))
            if terminated or truncated:
                break
        assert info["is_success"], f"no lift at {xy}"
