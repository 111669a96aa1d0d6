"""Forward kinematics: fingertip pose and Jacobian against our MuJoCo arm and franky's own model (franky-sim)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

import envs
from s2robot.real.env import HOME_Q
from s2robot.real.kinematics import HAND_POINTS, fingertip_jacobian, fingertip_pose, hand_points, joint_frames
from s2robot.real.safety import SafetyConfig


def random_qs(n: int, seed: int = 0) -> np.ndarray:
    """n joint vectors (n, 7) [rad] drawn inside the FR3's limits (shrunk by the default margin)."""
    limits = SafetyConfig().joint_limits
    return np.random.default_rng(seed).uniform(limits[:, 0], limits[:, 1], size=(n, 7))


@pytest.fixture(scope="module")
def sim_env() -> envs.CubePickEnv:
    env = envs.CubePickEnv(cameras=[], render_mode=None)
    yield env
    env.close()


def set_q(env: envs.CubePickEnv, q: np.ndarray) -> None:
    env.data.qpos[env.arm_qpos_adr] = q
    mujoco.mj_forward(env.model, env.data)


@pytest.mark.parametrize("i", range(5))
def test_pose_equals_mujoco_fingertip_site(sim_env: envs.CubePickEnv, i: int) -> None:
    """fingertip_pose equals the fingertip site of envs/assets/panda_arm.xml (position and rotation) to 1e-9."""
    q = random_qs(5)[i]
    set_q(sim_env, q)
    pose = fingertip_pose(q)
    np.testing.assert_allclose(pose[:3, 3], sim_env.data.site_xpos[sim_env.fingertip_site], rtol=0, atol=1e-9)
    np.testing.assert_allclose(pose[:3, :3], sim_env.data.site_xmat[sim_env.fingertip_site].reshape(3, 3),
                               rtol=0, atol=1e-9)
    np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])


@pytest.mark.parametrize("i", range(5))
def test_jacobian_equals_mj_jac_site(sim_env: envs.CubePickEnv, i: int) -> None:
    """fingertip_jacobian equals mujoco.mj_jacSite restricted to the arm's 7 dofs (linear and angular rows)."""
    q = random_qs(5, seed=1)[i]
    set_q(sim_env, q)
    jacp, jacr = np.zeros((3, sim_env.model.nv)), np.zeros((3, sim_env.model.nv))
    mujoco.mj_jacSite(sim_env.model, sim_env.data, jacp, jacr, sim_env.fingertip_site)
    expected = np.vstack([jacp[:, sim_env.arm_dof_adr], jacr[:, sim_env.arm_dof_adr]])
    np.testing.assert_allclose(fingertip_jacobian(q), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("i", range(3))
def test_hand_points_ride_on_the_mjcf_hand(sim_env: envs.CubePickEnv, i: int) -> None:
    """Each hand point sits at its HAND_POINTS coordinates in the MJCF hand body's frame (origin at the flange site),
    and an extra (tool) point is placed the same way."""
    q = random_qs(3, seed=3)[i]
    set_q(sim_env, q)
    tool = np.array([[0.07, 0.0, 0.03]])
    points = hand_points(fingertip_pose(q), tool)
    hand = sim_env.data.body("hand")
    local = (points - hand.xpos) @ hand.xmat.reshape(3, 3)  # into the hand body's frame
    np.testing.assert_allclose(local, np.vstack([list(HAND_POINTS.values()), tool]), atol=1e-9)
    np.testing.assert_allclose(points[0], sim_env.data.site("flange").xpos, atol=1e-9)


def test_jacobian_is_derivative_of_position() -> None:
    """The linear rows are the finite-difference derivative of the fingertip position."""
    q, eps = np.asarray(HOME_Q), 1e-6
    numeric = np.stack([(fingertip_pose(q + eps * e)[:3, 3] - fingertip_pose(q - eps * e)[:3, 3]) / (2 * eps)
                        for e in np.eye(7)], axis=1)
    np.testing.assert_allclose(fingertip_jacobian(q)[:3], numeric, atol=1e-7)


@pytest.mark.parametrize("q", [np.zeros(6), np.zeros((7, 1)), np.zeros(8)])
def test_wrong_shape_raises(q: np.ndarray) -> None:
    """A q that is not (7,) is a ValueError naming the shape, for pose, frames and Jacobian."""
    for fn in (fingertip_pose, joint_frames, fingertip_jacobian):
        with pytest.raises(ValueError, match=r"shape \(7,\)"):
            fn(q)


def test_equals_franky_model_in_franky_sim() -> None:
    """franky-sim's O_T_EE at the start pose, and franky's Model.pose of the end effector at other q, equal ours."""
    franky = pytest.importorskip("franky")
    pytest.importorskip("franky_sim")
    from s2robot.real.rehearsal import SimulatedFranka

    with SimulatedFranka((), initial_q=HOME_Q) as scene:
        robot = franky.Robot(scene.host, realtime_config=franky.RealtimeConfig.Ignore)
        state = robot.state
        q = np.asarray(state.q, dtype=np.float64)
        np.testing.assert_allclose(q, HOME_Q, atol=1e-3)
        np.testing.assert_allclose(np.asarray(state.O_T_EE.matrix), fingertip_pose(q), atol=1e-4)
        for other in random_qs(3, seed=2):
            franky_pose = robot.model.pose(franky.Frame.EndEffector, other.tolist(), state.F_T_EE, state.EE_T_K)
            np.testing.assert_allclose(np.asarray(franky_pose.matrix), fingertip_pose(other), atol=1e-4)
        del robot
