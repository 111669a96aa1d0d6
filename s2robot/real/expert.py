"""The scripted expert on the Franka env in franky-sim: the simulated expert's phases and IK, on the arm's kinematics.

The same approach → descend → close → lift plan (``envs.expert.PickPlanner``) and damped-least-squares step
(``envs.expert.ik_delta``) as the simulated env's expert, with the fingertip pose and Jacobian from forward
kinematics of the measured joints (``real.kinematics``) and the cube pose from the rehearsal scene (privileged: a
real cell has none, so on a real arm demos come from teleoperation). Its actions go through the env, franky and the
libfranka protocol like any policy's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from envs.expert import ExpertConfig, ExpertStep, PickPlanner, grasp_yaw, hand_rotation, ik_delta
from s2robot.real.kinematics import fingertip_jacobian, fingertip_pose

# The hand closes on a 4 cm cube in ~0.3 s (measured in franky-sim): the expert holds still 5 steps while it closes.
ARM_EXPERT = replace(ExpertConfig(), close_steps=5)


class ArmExpert:
    """Picks the cube on a ``FrankaEnv`` whose judge knows the cube pose (the franky-sim rehearsal)."""

    def __init__(self, env: Any, noise_std: float = 0.0, rng: np.random.Generator | None = None,
                 config: ExpertConfig | None = None) -> None:
        unwrapped = getattr(env, "unwrapped", env)
        if getattr(unwrapped, "scene", None) is None:
            raise TypeError("the scripted arm expert needs the cube's pose, which only the franky-sim rehearsal "
                            "(host=franky-sim) has; on a real arm record demos by teleoperation")
        if noise_std < 0 or (noise_std > 0 and rng is None):
            raise ValueError(f"noise_std must be ≥ 0 and needs an rng when > 0, got {noise_std}, rng={rng}")
        self.env, self.noise_std, self.rng = unwrapped, float(noise_std), rng
        self.config = config or ARM_EXPERT
        self.max_delta = unwrapped.safety_cfg.max_joint_step
        self.planner = PickPlanner(self.config)

    def reset(self) -> None:
        self.planner = PickPlanner(self.config)

    def __call__(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        return self.act(obs, info).label

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> ExpertStep:
        """The clean label (8,) float32 (joint deltas from the commanded target + gripper) and the executed one."""
        q = np.asarray(obs["proprio"][:7], dtype=np.float64)
        pose = fingertip_pose(q)
        tip, rot_now = pose[:3, 3], pose[:3, :3]
        target, speed, gripper = self.planner.plan(np.asarray(info["cube_pos"], dtype=np.float64), tip)
        rot_goal = hand_rotation(grasp_yaw(np.asarray(info["cube_quat"])))
        label = np.empty(8, dtype=np.float32)
        label[:7] = ik_delta(self.config, fingertip_jacobian(q), rot_now, tip, target, speed, rot_goal, q,
                             self.env.home_qpos, np.asarray(info["arm_target"]), self.max_delta)
        label[7] = gripper
        if self.noise_std == 0.0:
            return ExpertStep(label, label.copy())
        executed = label.copy()
        executed[:7] = np.clip(executed[:7] + self.rng.normal(0.0, self.noise_std, 7), -self.max_delta, self.max_delta)
        return ExpertStep(label, executed)
