"""MJCF assets: the scene compiles, is fully named, matches the Panda's DH chain and runs warning-free."""

import math

import mujoco
import numpy as np
import pytest

import envs
from envs.cube_pick import ARM_JOINTS, SCENE_XML
from s2robot.real.kinematics import FLANGE_D, joint_frames

ROBOT_XML = SCENE_XML.parent / "panda_arm.xml"

HOME = (0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4)
LIMITS = (
    (-2.8973, 2.8973),
    (-1.7628, 1.7628),
    (-2.8973, 2.8973),
    (-3.0718, -0.0698),
    (-2.8973, 2.8973),
    (-0.0175, 3.7525),
    (-2.8973, 2.8973),
)


@pytest.fixture(scope="module")
def scene() -> tuple[mujoco.MjModel, mujoco.MjData]:
    model = mujoco.MjModel.from_xml_path(str(SCENE_XML))
    return model, mujoco.MjData(model)


def test_scene_and_robot_compile() -> None:
    """Both files compile; the robot file alone is 7 arm + 2 finger joints and 8 actuators."""
    robot = mujoco.MjModel.from_xml_path(str(ROBOT_XML))
    assert (robot.njnt, robot.nu) == (9, 8)
    scene = mujoco.MjModel.from_xml_path(str(SCENE_XML))
    assert (scene.njnt, scene.nu, scene.nq) == (10, 8, 16)  # + the cube's free joint
    assert scene.opt.timestep <= 0.002


def test_everything_is_named(scene) -> None:
    """Every body, joint, geom, site, actuator and camera has a unique name."""
    model, _ = scene
    for kind, count in [
        (mujoco.mjtObj.mjOBJ_BODY, model.nbody),
        (mujoco.mjtObj.mjOBJ_JOINT, model.njnt),
        (mujoco.mjtObj.mjOBJ_GEOM, model.ngeom),
        (mujoco.mjtObj.mjOBJ_SITE, model.nsite),
        (mujoco.mjtObj.mjOBJ_ACTUATOR, model.nu),
        (mujoco.mjtObj.mjOBJ_CAMERA, model.ncam),
    ]:
        start = 1 if kind == mujoco.mjtObj.mjOBJ_BODY else 0  # body 0 is the world
        names = [mujoco.mj_id2name(model, kind, i) for i in range(start, count)]
        assert all(names), f"unnamed {kind.name}: {names}"
        assert len(set(names)) == len(names)
    cameras = {model.camera(i).name for i in range(model.ncam)}
    assert cameras == {"front", "wrist", "video"}


def test_visual_and_collision_classes(scene) -> None:
    """Visual geoms (group 2) never collide; collision geoms (group 3) are hidden and do collide."""
    model, _ = scene
    visual = np.flatnonzero(model.geom_group == 2)
    collision = np.flatnonzero(model.geom_group == 3)
    assert len(visual) >= 10 and len(collision) >= 10
    assert np.all(model.geom_contype[visual] == 0) and np.all(model.geom_conaffinity[visual] == 0)
    assert np.all(model.geom_contype[collision] > 0)


def test_joint_limits_and_home_keyframe(scene) -> None:
    """Arm joint ranges are the Panda's; the home key has the arm at home, gripper open, cube on the table."""
    model, data = scene
    ranges = np.array([model.joint(n).range for n in ARM_JOINTS])
    np.testing.assert_allclose(ranges, LIMITS, atol=1e-9)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    q = np.array([data.joint(n).qpos[0] for n in ARM_JOINTS])
    np.testing.assert_allclose(q, HOME, atol=1e-12)
    assert data.joint("finger_joint1").qpos[0] == data.joint("finger_joint2").qpos[0] == 0.04
    assert data.joint("cube_joint").qpos[2] == pytest.approx(envs.CUBE_REST_Z)


def test_forward_kinematics_match_modified_dh(scene) -> None:
    """Flange and fingertip sites match the Franka's modified-DH chain (``s2robot.real.kinematics``, itself checked
    against libfranka's model in tests/real/test_kinematics.py) to 1e-6 at random configurations."""
    model, data = scene
    rng = np.random.default_rng(0)
    lo, hi = np.array(LIMITS).T
    for q in [np.array(HOME), *rng.uniform(lo, hi, size=(10, 7))]:
        for name, qi in zip(ARM_JOINTS, q, strict=True):
            data.joint(name).qpos = qi
        mujoco.mj_kinematics(model, data)
        frames = joint_frames(q)  # joints 1-7, then the fingertip
        flange = frames[6].copy()
        flange[:3, 3] += FLANGE_D * flange[:3, 2]  # the flange: 0.107 m along joint 7's z axis
        np.testing.assert_allclose(data.site("flange").xpos, flange[:3, 3], atol=1e-6)
        np.testing.assert_allclose(data.site("flange").xmat.reshape(3, 3), flange[:3, :3], atol=1e-6)
        tip = frames[7]
        np.testing.assert_allclose(data.site("fingertip").xpos, tip[:3, 3], atol=1e-6)
        np.testing.assert_allclose(data.site("fingertip").xmat.reshape(3, 3), tip[:3, :3], atol=1e-6)


def test_gripper_is_one_actuator_over_coupled_fingers(scene) -> None:
    """ctrl has 8 entries; the gripper target 0 closes both fingers together, 0.04 opens them."""
    model, data = scene
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    data.joint("cube_joint").qpos[:3] = (0.5, 0.4, 0.02)  # out of the way
    gripper = model.actuator("gripper").id
    np.testing.assert_allclose(model.actuator_ctrlrange[gripper], (0.0, 0.04))
    data.ctrl[gripper] = 0.0
    mujoco.mj_step(model, data, nstep=250)
    f1, f2 = data.joint("finger_joint1").qpos[0], data.joint("finger_joint2").qpos[0]
    assert f1 < 0.002 and abs(f1 - f2) < 1e-4
    data.ctrl[gripper] = 0.04
    mujoco.mj_step(model, data, nstep=250)
    assert data.joint("finger_joint1").qpos[0] > 0.038


def test_random_control_for_one_second_raises_no_warnings(scene) -> None:
    """Random controls over each actuator's full range, redrawn every 0.1 s, give no MuJoCo warning."""
    model, data = scene
    rng = np.random.default_rng(0)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    low, high = model.actuator_ctrlrange.T
    substeps = round(0.1 / model.opt.timestep)
    for _ in range(10):
        data.ctrl = rng.uniform(low, high)
        mujoco.mj_step(model, data, nstep=substeps)
    assert data.time == pytest.approx(1.0)
    assert [w.number for w in data.warning] == [0] * len(data.warning)
    assert np.all(np.isfinite(data.qpos))
