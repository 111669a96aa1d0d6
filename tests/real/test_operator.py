"""The scripted operator on the pure kinematics: keys only, a pick through the teleop, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from s2robot.real.kinematics import fingertip_pose
from s2robot.real.operator import ScriptedOperator, Stage, scripted_operator_policy
from s2robot.real.teleop import DONE_KEY, GRIPPER_KEY, KEYMAP, CartesianTeleop
from s2robot.sim.env import ARM_ENV_ID, EnvConfig
from s2robot.workflows.record import RecordConfig

HOME_Q = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])
CUBE = np.array([0.55, 0.12, 0.02])  # resting cube centre [m]
UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])


class FakeEnv:
    """What the teleop reads from a ``FrankaEnv``: its safety limits and home posture."""

    def __init__(self) -> None:
        from s2robot.real.safety import SafetyConfig

        self.unwrapped, self.safety_cfg, self.home_qpos = self, SafetyConfig(), HOME_Q.copy()


class Cell:
    """A kinematic cell: the arm lands on each commanded target one step late (a real arm follows ~1 step behind),
    the fingers close 1.5 cm a step onto the 4 cm cube, and a cube between closed fingers moves with the fingertip."""

    def __init__(self) -> None:
        self.q, self.commanded, self.width, self.cube = HOME_Q.copy(), HOME_Q.copy(), 0.08, CUBE.copy()
        self.held = False

    def obs_info(self) -> tuple[dict[str, np.ndarray], dict]:
        tip = self.tip = fingertip_pose(self.q)[:3, 3]
        return ({"proprio": np.r_[self.q, self.width].astype(np.float32)},
                {"cube_pos": self.cube.copy(), "cube_quat": UPRIGHT, "fingertip_pos": tip,
                 "arm_target": self.commanded.copy()})

    def step(self, action: np.ndarray) -> None:
        self.q, self.commanded = self.commanded, self.commanded + action[:7].astype(np.float64)
        closed = action[7] >= 0.5
        self.width = max(0.04, self.width - 0.015) if closed else min(0.08, self.width + 0.015)
        caught = self.width <= 0.04 and np.linalg.norm(self.tip - self.cube) < 0.015  # closed on the cube
        self.held = closed and (self.held or caught)
        if self.held:
            self.cube = fingertip_pose(self.q)[:3, 3]
        self.tip = fingertip_pose(self.q)[:3, 3]


class Watched(ScriptedOperator):
    """The operator, with the keys of every poll kept."""

    def __init__(self) -> None:
        super().__init__()
        self.pressed_keys: list[list[str]] = []

    def poll(self) -> list[str]:
        self.pressed_keys.append(super().poll())
        return self.pressed_keys[-1]


def test_operator_picks_the_cube_through_the_teleop_pressing_keys_only() -> None:
    """Through ``CartesianTeleop``: the operator's keys (only keymap keys) bring the hand above the cube, down, close
    it, lift the cube 15 cm and press Enter; the teleop's target never came from anywhere but the keys."""
    cell, operator = Cell(), Watched()
    teleop = CartesianTeleop(operator, FakeEnv())
    pressed, stages = operator.pressed_keys, []
    for _ in range(150):
        obs, info = cell.obs_info()
        action = teleop(obs, info)
        stages.append(operator.stage)
        if teleop.done:
            break
        cell.step(action)
    assert teleop.done and pressed[-1] == [DONE_KEY]
    keys = [k for step in pressed for k in step]
    assert set(keys) <= set(KEYMAP) and keys.count(GRIPPER_KEY) == 1
    assert [s for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]] == list(Stage)
    assert cell.cube[2] - CUBE[2] == pytest.approx(0.15, abs=0.01)
    assert np.abs(cell.cube[:2] - CUBE[:2]).max() < 0.01


def test_operator_opens_and_tries_again_when_the_cube_stays_behind() -> None:
    """Lifting without the cube (it was not caught): the operator opens the hand and lines up above it again."""
    operator = ScriptedOperator()
    operator.stage, operator.grasp = Stage.LIFT, CUBE.copy()
    tip = CUBE + np.array([0.0, 0.0, 0.05])
    info = {"cube_pos": CUBE, "cube_quat": UPRIGHT, "fingertip_pos": tip}
    operator.observe({"proprio": np.r_[HOME_Q, 0.0].astype(np.float32)}, info)
    keys = operator.poll()
    assert keys[0] == GRIPPER_KEY and operator.stage is Stage.ABOVE


def test_operator_refuses_a_cell_without_the_cube_pose() -> None:
    """On a real arm the cube's orientation is NaN (nothing measures it): the operator says to teleoperate instead."""
    operator = ScriptedOperator()
    info = {"cube_pos": CUBE, "cube_quat": np.full(4, np.nan), "fingertip_pos": CUBE}
    with pytest.raises(RuntimeError, match="controller=keyboard"):
        operator.observe({"proprio": np.r_[HOME_Q, 0.08].astype(np.float32)}, info)


def test_recording_refuses_the_scripted_operator_on_a_robot() -> None:
    """``controller=scripted_operator`` with a robot's address is refused when the config is built."""
    env = EnvConfig(id=ARM_ENV_ID, options={"host": "172.16.0.2", "camera_sources": {"front": "opencv:0"}})
    with pytest.raises(ValueError, match="only the franky-sim rehearsal"):
        RecordConfig(env=env, controller="scripted_operator")
    with pytest.raises(ValueError, match="keys_per_step"):
        ScriptedOperator(keys_per_step=0)


def test_the_factory_names_the_operator_and_shares_the_key_step() -> None:
    """The recorder's factory builds a teleop whose step and lead match its operator's."""
    factory = scripted_operator_policy(step=0.02)
    teleop = factory(FakeEnv(), 0)
    operator = teleop.source.factory()
    assert teleop.step == 0.02 and operator.scale[0] == 0.02 and operator.lead == teleop.lead
    assert "scripted operator" in factory.name
