"""Scripted cube-pick expert: a phase machine over privileged state with damped-least-squares IK.

Approach above the cube → descend → close → lift, each step moving the fingertip a bounded distance
towards the phase's target while holding the hand vertical, and emitting the same 8-D action a policy
would (7 joint deltas [rad] + gripper command). If a lift loses the cube, it opens and starts again.
"""

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, NamedTuple

import gymnasium as gym
import mujoco
import numpy as np

from envs.cube_pick import MAX_JOINT_DELTA, CubePickEnv


class Phase(Enum):
    """The expert's phases, in order."""

    APPROACH = 0
    DESCEND = 1
    CLOSE = 2
    LIFT = 3


@dataclass(frozen=True)
class ExpertConfig:
    """Tuning of the scripted expert; distances in metres, per 0.1 s control step where noted."""

    pregrasp_height: float = 0.10  # fingertip above the cube centre before descending [m]
    grasp_height: float = 0.0  # fingertip above the cube centre when closing [m]
    lift_height: float = 0.15  # how far to lift after closing [m]
    approach_speed: float = 0.04  # max fingertip travel per step while approaching [m]
    descend_speed: float = 0.025  # ... while descending [m]
    lift_speed: float = 0.03  # ... while lifting [m]
    rotation_speed: float = 0.15  # max hand rotation per step [rad]
    approach_tolerance: float = 0.015  # fingertip error that ends the approach [m]
    # Horizontal fingertip error allowed below the safe height and at closing [m]: the open fingers leave
    # 2 cm of slack each side of the cube, and a looser bound keeps noisy demos (noise_std 0.02) moving.
    align_tolerance: float = 0.02
    safe_height: float = 0.03  # fingertip height above the grasp point kept until aligned [m]
    grasp_tolerance: float = 0.006  # vertical fingertip error that ends the descent [m]
    close_steps: int = 3  # steps to hold still with the gripper closing [steps]
    lost_distance: float = 0.03  # cube-fingertip distance that means the grasp failed during lift [m]
    damping: float = 0.05  # DLS damping λ [m] / [rad]
    nullspace_gain: float = 0.1  # pull towards the home posture in the Jacobian null space [1/step]
    delta_margin: float = 0.9  # fraction of MAX_JOINT_DELTA the clean label may use


def paced(config: ExpertConfig, pace: float) -> ExpertConfig:
    """``config`` with its approach, descent, lift and rotation speeds × ``pace`` (> 0): below 1 a pick takes more
    control steps along the same path (the hold while the gripper closes is kept)."""
    if not (pace > 0 and np.isfinite(pace)):
        raise ValueError(f"the expert's pace must be a finite number > 0 (its speeds' factor), got {pace}")
    return replace(config, approach_speed=config.approach_speed * pace, descend_speed=config.descend_speed * pace,
                   lift_speed=config.lift_speed * pace, rotation_speed=config.rotation_speed * pace)


class ExpertStep(NamedTuple):
    """One expert decision: ``label`` is the clean action to record, ``executed`` the one to step with.

    Both (8,) float32. Without noise they are equal; with noise injection the executed action is the
    label plus Gaussian noise on the joint deltas, and the next label corrects the perturbation.
    """

    label: np.ndarray
    executed: np.ndarray


def hand_rotation(yaw: float) -> np.ndarray:
    """Rotation (3, 3) of a fingers-down hand whose x axis points at ``yaw`` [rad] in the xy plane."""
    c, s = np.cos(yaw), np.sin(yaw)
    # Columns: hand x = (c, s, 0); hand z = (0, 0, -1) (pointing down); hand y = z × x.
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def grasp_yaw(cube_quat: np.ndarray) -> float:
    """Hand yaw [rad] in (-π/4, π/4] that puts the fingers on a pair of opposite faces of the cube.

    cube_quat: (4,) (w, x, y, z). The cube is 4-fold symmetric about z, so its yaw is taken modulo π/2.
    """
    w, x, y, z = cube_quat
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return float(-((-yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4))


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Axis-angle-like error (3,) [rad] rotating ``current`` (3, 3) towards ``target`` (3, 3), world frame."""
    return 0.5 * np.cross(current, target, axis=0).sum(axis=1)


def dls_step(jac: np.ndarray, error: np.ndarray, damping: float) -> tuple[np.ndarray, np.ndarray]:
    """Damped least squares: joint step (n,) for task error (6,), and the damped pseudo-inverse (n, 6)."""
    pinv = jac.T @ np.linalg.inv(jac @ jac.T + damping**2 * np.eye(jac.shape[0]))  # (n, 6)
    return pinv @ error, pinv


def limit_norm(vector: np.ndarray, max_norm: float) -> np.ndarray:
    """``vector`` scaled down, direction kept, so that its Euclidean norm is at most ``max_norm``."""
    norm = np.linalg.norm(vector)
    return vector if norm <= max_norm else vector * (max_norm / norm)


def limit_norm_inf(vector: np.ndarray, max_abs: float) -> np.ndarray:
    """``vector`` scaled down, direction kept, so that no component exceeds ``max_abs`` in magnitude."""
    peak = np.abs(vector).max()
    return vector if peak <= max_abs else vector * (max_abs / peak)


class PickPlanner:
    """The expert's phase machine: approach above the cube → descend → close → lift (and start again if the cube is
    lost). Pure: it sees the cube and fingertip positions, so any arm with a fingertip Jacobian can follow it."""

    def __init__(self, config: ExpertConfig) -> None:
        self.config = config
        self.phase = Phase.APPROACH
        self._phase_steps = 0
        self._grasp_point: np.ndarray | None = None

    def _set_phase(self, phase: Phase) -> None:
        self.phase, self._phase_steps = phase, 0

    def plan(self, cube: np.ndarray, tip: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Advance the phase machine; returns fingertip target (3,) [m], speed [m/step], gripper command."""
        cfg = self.config
        self._phase_steps += 1
        pregrasp = cube + np.array([0.0, 0.0, cfg.pregrasp_height])
        grasp = cube + np.array([0.0, 0.0, cfg.grasp_height])
        if self.phase is Phase.APPROACH and np.linalg.norm(pregrasp - tip) < cfg.approach_tolerance:
            self._set_phase(Phase.DESCEND)
        aligned = np.linalg.norm((grasp - tip)[:2]) < cfg.align_tolerance
        if self.phase is Phase.DESCEND and aligned and abs(tip[2] - grasp[2]) < cfg.grasp_tolerance:
            self._set_phase(Phase.CLOSE)
            self._grasp_point = grasp
        if self.phase is Phase.CLOSE and self._phase_steps > cfg.close_steps:
            self._set_phase(Phase.LIFT)
        if self.phase is Phase.LIFT and np.linalg.norm(cube - tip) > cfg.lost_distance:
            self._set_phase(Phase.APPROACH)  # dropped or missed: open and try again

        if self.phase is Phase.APPROACH:
            return pregrasp, cfg.approach_speed, 0.0
        if self.phase is Phase.DESCEND:  # re-centre above the cube before the fingers reach its top
            height = grasp[2] if aligned else max(tip[2], grasp[2] + cfg.safe_height)
            return np.r_[grasp[:2], height], cfg.descend_speed, 0.0
        assert self._grasp_point is not None
        if self.phase is Phase.CLOSE:
            return self._grasp_point, cfg.descend_speed, 1.0
        return self._grasp_point + np.array([0.0, 0.0, cfg.lift_height]), cfg.lift_speed, 1.0


class ScriptedExpert:
    """Picks the cube using privileged state: ``info`` from the env plus the env's MuJoCo model/data.

    Usage (the recorder's loop)::

        expert = ScriptedExpert(env, noise_std=0.02, rng=np.random.default_rng(0))
        obs, info = env.reset(seed=0); expert.reset()
        step = expert.act(obs, info)            # record step.label, execute step.executed
        obs, reward, terminated, truncated, info = env.step(step.executed)

    ``expert(obs, info)`` returns just the clean label (what to execute too when ``noise_std == 0``).
    Measured with scripts/check_expert.py (200 random positions): 100% clean, 26 steps median; 100% at
    noise_std 0.01 rad; 98.5% at 0.02 rad (noise larger than that moves the fingertip ~2 cm a step).
    """

    def __init__(
        self,
        env: gym.Env,
        noise_std: float = 0.0,
        rng: np.random.Generator | None = None,
        config: ExpertConfig | None = None,
    ) -> None:
        """env: a CubePickEnv, possibly wrapped. noise_std: std of the Gaussian noise added to the
        executed joint deltas [rad]. rng: noise source (required when noise_std > 0, for reproducibility).
        """
        unwrapped = getattr(env, "unwrapped", env)
        if not isinstance(unwrapped, CubePickEnv):
            raise TypeError(f"ScriptedExpert needs a CubePickEnv, got {type(unwrapped).__name__}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be ≥ 0 [rad], got {noise_std}")
        if noise_std > 0 and rng is None:
            raise ValueError("noise_std > 0 needs an explicit rng=np.random.Generator for reproducible demos")
        self.env = unwrapped
        self.noise_std = float(noise_std)
        self.rng = rng
        self.config = config or ExpertConfig()
        self._jacp = np.zeros((3, self.env.model.nv))
        self._jacr = np.zeros((3, self.env.model.nv))
        self.reset()

    def reset(self) -> None:
        """Forget the previous episode; call after every env.reset()."""
        self.planner = PickPlanner(self.config)

    @property
    def phase(self) -> Phase:
        return self.planner.phase

    def __call__(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        """The clean expert action (8,) float32 for this step."""
        return self.act(obs, info).label

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> ExpertStep:
        """The clean label and the (possibly noise-perturbed) action to execute, both (8,) float32."""
        cube = np.asarray(info["cube_pos"], dtype=np.float64)
        tip = np.asarray(info["fingertip_pos"], dtype=np.float64)
        target, speed, gripper = self.planner.plan(cube, tip)
        rotation = hand_rotation(grasp_yaw(np.asarray(info["cube_quat"])))
        label = np.empty(8, dtype=np.float32)
        label[:7] = self._joint_delta(tip, target, speed, rotation)
        label[7] = gripper
        if self.noise_std == 0.0:
            return ExpertStep(label, label.copy())
        executed = label.copy()
        executed[:7] += self.rng.normal(0.0, self.noise_std, size=7)
        executed[:7] = np.clip(executed[:7], -MAX_JOINT_DELTA, MAX_JOINT_DELTA)
        return ExpertStep(label, executed)

    # ------------------------------------------------------------------------------------- helpers
    def _joint_delta(self, tip: np.ndarray, target: np.ndarray, speed: float, rot: np.ndarray) -> np.ndarray:
        """Joint deltas (7,) [rad] from the env's commanded target that move the fingertip one step (``ik_delta``)."""
        env = self.env
        m, d = env.model, env.data
        mujoco.mj_jacSite(m, d, self._jacp, self._jacr, env.fingertip_site)
        jac = np.vstack([self._jacp[:, env.arm_dof_adr], self._jacr[:, env.arm_dof_adr]])  # (6, 7)
        current = d.site_xmat[env.fingertip_site].reshape(3, 3)
        return ik_delta(self.config, jac, current, tip, target, speed, rot, d.qpos[env.arm_qpos_adr],
                        env.home_qpos, env.arm_target)


def ik_delta(cfg: ExpertConfig, jac: np.ndarray, rot_now: np.ndarray, tip: np.ndarray, target: np.ndarray,
             speed: float, rot_goal: np.ndarray, q: np.ndarray, home_q: np.ndarray, commanded: np.ndarray,
             max_delta: float = MAX_JOINT_DELTA) -> np.ndarray:
    """Joint deltas (7,) [rad] from the ``commanded`` joint target that move the fingertip one step towards ``target``.

    jac: fingertip Jacobian (6, 7) at the measured joints ``q`` (7,); rot_now, rot_goal: hand orientations (3, 3);
    tip, target: fingertip position now and goal (3,) [m]; speed: max travel this step [m]; home_q: posture the
    null space is pulled towards (7,). The step is bounded to ``cfg.delta_margin * max_delta`` per joint.
    """
    error = np.r_[  # (6,) bounded task-space step: translation [m], rotation [rad]
        limit_norm(target - tip, speed),
        limit_norm(rotation_error(rot_now, rot_goal), cfg.rotation_speed),
    ]
    dq, pinv = dls_step(jac, error, cfg.damping)  # (7,), (7, 6)
    dq += (np.eye(7) - pinv @ jac) @ (cfg.nullspace_gain * (home_q - q))
    delta = q + dq - commanded
    return limit_norm_inf(delta, cfg.delta_margin * max_delta)
