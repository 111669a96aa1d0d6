"""Cube picking with a 7-DoF Panda-kinematics arm in MuJoCo, as a gymnasium environment.

The policy commands 7 joint-position deltas and a gripper closure at 10 Hz (the MVP/RPT action
convention) and sees 8-D proprioception plus one RGB image per requested camera. Privileged state for
the scripted expert and for evaluation goes in ``info``.
"""

import os
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

# MuJoCo chooses its OpenGL backend once, when `mujoco` is first imported, and a headless machine with
# no backend chosen hangs or crashes at the first render. This is the one import-time side effect in
# envs/: it only fills in MUJOCO_GL when the user set nothing and there is no display to use.
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"

import gymnasium as gym
import mujoco
import numpy as np

from envs import variation
from envs.positions import demo_cube_xy
from envs.scene import SceneEditor

SCENE_XML = Path(__file__).parent / "assets" / "cube_pick_scene.xml"

TABLE_TOP_Z = 0.0  # table top height [m]; the robot base sits on it at the world origin
CUBE_HALF_SIZE = 0.02  # half the cube's edge [m]
CUBE_REST_Z = TABLE_TOP_Z + CUBE_HALF_SIZE  # cube centre height when resting on the table [m]
LIFT_SUCCESS_HEIGHT = 0.05  # lift above rest that counts as success, while grasped [m]
CONTROL_DT = 0.1  # control period [s] (10 Hz)
MAX_JOINT_DELTA = 0.1  # per-step bound on each arm joint-position delta [rad] (1 rad/s at 10 Hz)
FINGER_OPEN = 0.04  # finger joint travel [m]; the fingers are 2 * FINGER_OPEN apart when fully open
ACTION_MODES = ("delta", "absolute")  # joint-position deltas or targets (see CubePickEnv)
PROPRIO_MARGIN = 0.05  # slack on the proprio bounds beyond the joint and finger ranges [rad or m]
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
ARM_ACTUATORS = tuple(f"actuator{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_joint1", "finger_joint2")
CAMERAS = ("front", "wrist", "video")
SCENE_STREAM = 0x7363656E  # tags the per-episode scene-variation stream, apart from the cube and arm-noise draws
MAX_ACTION_DELAY = 5  # longest actuation delay the env takes [control steps] (0.5 s: beyond any arm's controller)


def _check_counts(action_delay: int, scene_index: int) -> None:
    """Refuse an ``action_delay`` outside [0, MAX_ACTION_DELAY] or a negative ``scene_index`` (both integers)."""
    if not (isinstance(action_delay, int | np.integer) and 0 <= action_delay <= MAX_ACTION_DELAY):
        raise ValueError(f"action_delay must be an int in [0, {MAX_ACTION_DELAY}] [control steps], "
                         f"got {action_delay!r}")
    if not (isinstance(scene_index, int | np.integer) and scene_index >= 0):
        raise ValueError(f"scene_index must be an int ≥ 0, got {scene_index!r}")


class CubePickEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Pick up a 4 cm cube with a 7-DoF arm and a parallel-jaw gripper.

    Action, (8,) float32, in one of two ``action_mode``s:
        ``"delta"``: ``[0:7]`` joint-position deltas [rad], each bounded to ±MAX_JOINT_DELTA (0.1 rad per
        0.1 s step); ``"absolute"``: ``[0:7]`` joint-position targets [rad], bounded the same way (a target
        further than MAX_JOINT_DELTA from the current commanded position is clipped to that distance);
        ``[7]`` gripper command in [0, 1], 0 open, 1 closed (linear in finger opening in between).
        Out-of-range values are clipped to these bounds and counted in ``info["clipped_steps"]``; a wrong
        shape, NaN or inf raises ValueError.
        The arm target is an internal commanded position, not the measured one: each step sets
        ``target = clip(target + delta, joint limits)``, so tracking lag never accumulates as drift.
        The servos low-pass the target (30 ms time constant, in the MJCF), turning each 10 Hz step into
        a smooth ramp that the joints follow to within ~5% by the end of the step.
        ``action_delay`` k > 0 holds each command (arm target and gripper) back k control steps before the servos
        get it, as a controller that follows its targets late does (a Franka through franky: ~1.5 steps); the first
        k steps of an episode keep the reset pose. ``arm_target`` (and ``info["arm_target"]``) stays the newest
        command, so deltas and the per-step bound refer to what was commanded, not to what the servos got yet.
    Observation, dict:
        ``proprio`` (8,) float32: 7 measured joint positions [rad] + gripper opening, the distance
        between the finger pads [m] (0 closed, 0.08 open);
        ``<camera>`` (S, S, 3) uint8 RGB for each camera in ``cameras``.
    Info: ``cube_pos`` (3,) [m], ``cube_quat`` (4,) (w, x, y, z), ``fingertip_pos`` (3,) [m],
        ``is_grasped`` (both finger pads touch the cube), ``lift_height`` [m] above rest, ``is_success``,
        ``arm_target`` (7,) the commanded joint positions [rad], ``clipped_steps`` steps so far whose action
        was clipped; at reset also ``variation``, the episode's scene parameters (``envs.variation``; {} for none).
    Scene variation: ``reset(options={"variation": spec})`` varies lights, colours, the camera, distractors, the
        frames or the cube (``envs.variation``: e.g. ``"standard"``, ``"light_intensity:high"``), drawn from the
        episode's seed on a stream of its own, so the cube, the arm noise and (for visual factors) the physics
        are those of the same seed without variation. Without the option the scene is as built.
    Success: the cube centre is ≥ LIFT_SUCCESS_HEIGHT above its resting height while both finger pads
        touch it and the gripper command is closed (≥ 0.5). Reward is 1.0 on success steps, else 0.0.

    Physics runs at the model's 2 ms timestep, CONTROL_DT / timestep = 50 substeps per step. After a step,
    qpos/qvel are current and derived quantities (site positions, contacts) are those MuJoCo computed at
    the start of the last substep (2 ms earlier), which saves a full mj_forward per step.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": round(1 / CONTROL_DT)}
    MAX_JOINT_DELTA: ClassVar[float] = MAX_JOINT_DELTA

    def __init__(
        self,
        cameras: tuple[str, ...] | list[str] = ("front",),
        image_size: int = 224,
        max_steps: int = 100,
        render_mode: str | None = "rgb_array",
        terminate_on_success: bool = True,
        joint_noise: float = 0.0,
        render_size: tuple[int, int] = (480, 640),
        action_mode: str = "delta",
        action_delay: int = 0,
        scene_index: int = 0,
    ) -> None:
        """Build the env.

        cameras: cameras rendered into the observation, in this order (any of CAMERAS; may be empty).
        image_size: side S of the square observation images [px].
        max_steps: episode length before truncation [control steps] (100 = 10 s).
        render_mode: "rgb_array" (render() returns the ``video`` camera) or None.
        terminate_on_success: end the episode (terminated=True) at the first success (as EnvConfig does).
            False keeps stepping after it (rendered frames of a lifted cube, what frame generation wants).
        joint_noise: half-width of the uniform noise added to the home joint positions at reset [rad].
        render_size: (height, width) of render() frames [px].
        action_mode: ``"delta"`` (joint-position deltas) or ``"absolute"`` (joint-position targets).
        action_delay: control steps a command waits before the servos get it (0 to MAX_ACTION_DELAY; 0: at once).
        scene_index: which of each seed's varied scenes a ``variation`` draws: 0 the one every env draws for the
            seed; k ≥ 1 another, on a stream of its own (the same demos recorded in several scenes for scene views).
        """
        if isinstance(cameras, str):  # cameras="front" means one camera, not five one-letter names
            cameras = (cameras,)
        self.model = mujoco.MjModel.from_xml_path(str(SCENE_XML))
        self.data = mujoco.MjData(self.model)
        self._check_args(cameras, image_size, render_size, max_steps, joint_noise, action_mode, render_mode)
        _check_counts(action_delay, scene_index)

        self.cameras = tuple(cameras)
        self.image_size = int(image_size)
        self.max_steps = int(max_steps)
        self.render_mode = render_mode
        self.terminate_on_success = terminate_on_success
        self.joint_noise = float(joint_noise)
        self.action_mode = action_mode
        self.action_delay = int(action_delay)
        self.scene_index = int(scene_index)
        self.render_size = (int(render_size[0]), int(render_size[1]))

        self._cache_indices()
        self._build_spaces()
        self._clipped = 0

        self.scene = SceneEditor(self.model, self.cameras)
        self._frame_rng = np.random.default_rng(0)  # image-factor noise, reseeded per episode
        self._cube_rest_z = CUBE_REST_Z
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._arm_target = self.home_qpos.copy()  # (7,) commanded joint positions [rad]
        self._gripper_cmd = 0.0
        self._steps = 0

    def _check_args(self, cameras: tuple[str, ...] | list[str], image_size: int, render_size: tuple[int, int],
                    max_steps: int, joint_noise: float, action_mode: str, render_mode: str | None) -> None:
        """Refuse constructor arguments the loaded model cannot honour (see ``__init__`` for their meaning)."""
        model = self.model
        available = tuple(model.camera(i).name for i in range(model.ncam))
        unknown = [c for c in cameras if c not in available]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; available cameras: {list(available)}")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must not repeat, got {list(cameras)}")
        max_side = min(model.vis.global_.offwidth, model.vis.global_.offheight)
        if not (isinstance(image_size, int | np.integer) and 0 < image_size <= max_side):
            raise ValueError(f"image_size must be an int in [1, {max_side}], got {image_size!r}")
        buffer = (model.vis.global_.offheight, model.vis.global_.offwidth)
        if not (0 < render_size[0] <= buffer[0] and 0 < render_size[1] <= buffer[1]):
            raise ValueError(f"render_size (h, w) must fit the offscreen buffer {buffer}, got {render_size}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be ≥ 1, got {max_steps}")
        if joint_noise < 0:
            raise ValueError(f"joint_noise must be ≥ 0 [rad], got {joint_noise}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")

    def _cache_indices(self) -> None:
        """Look up joints, actuators, bodies, sites and the home keyframe by name; only their indices are cached."""
        model = self.model
        self.arm_qpos_adr = np.array([model.joint(n).qposadr[0] for n in ARM_JOINTS])
        self.arm_dof_adr = np.array([model.joint(n).dofadr[0] for n in ARM_JOINTS])
        self._finger_qpos = np.array([model.joint(n).qposadr[0] for n in FINGER_JOINTS])
        self._arm_act = np.array([model.actuator(n).id for n in ARM_ACTUATORS])
        self._arm_act_state = model.actuator_actadr[self._arm_act]  # filtered-target states, (7,)
        self._gripper_act = model.actuator("gripper").id
        cube_adr = model.joint("cube_joint").qposadr[0]
        self._cube_pos = slice(cube_adr, cube_adr + 3)
        self._cube_quat = slice(cube_adr + 3, cube_adr + 7)
        self._cube_body = model.body("cube").id
        self._finger_bodies = (model.body("left_finger").id, model.body("right_finger").id)
        self.fingertip_site = model.site("fingertip").id
        self._home_key = model.key("home").id
        self.home_qpos = model.key_qpos[self._home_key, self.arm_qpos_adr].copy()  # (7,)
        self.joint_limits = model.jnt_range[[model.joint(n).id for n in ARM_JOINTS]].copy()  # (7, 2)
        self.n_substeps = round(CONTROL_DT / model.opt.timestep)
        if not np.isclose(self.n_substeps * model.opt.timestep, CONTROL_DT):
            raise ValueError(f"timestep {model.opt.timestep} s must divide the control period {CONTROL_DT} s")

    def _build_spaces(self) -> None:
        """The action space of ``action_mode`` and the observation space of ``cameras`` at ``image_size``."""
        if self.action_mode == "delta":
            low = np.r_[np.full(7, -MAX_JOINT_DELTA), 0.0].astype(np.float32)
            high = np.r_[np.full(7, MAX_JOINT_DELTA), 1.0].astype(np.float32)
        else:  # targets within the joint limits; the per-step bound depends on the state (see step)
            low = np.r_[self.joint_limits[:, 0], 0.0].astype(np.float32)
            high = np.r_[self.joint_limits[:, 1], 1.0].astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self._act_low, self._act_high = low.astype(np.float64), high.astype(np.float64)
        # Soft joint limits and finger contacts let measured positions overshoot slightly: ±PROPRIO_MARGIN.
        proprio_low = np.r_[self.joint_limits[:, 0], 0.0] - PROPRIO_MARGIN
        proprio_high = np.r_[self.joint_limits[:, 1], 2 * FINGER_OPEN] + PROPRIO_MARGIN
        spaces: dict[str, gym.spaces.Space] = {
            "proprio": gym.spaces.Box(proprio_low.astype(np.float32), proprio_high.astype(np.float32))
        }
        for cam in self.cameras:
            spaces[cam] = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), dtype=np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)

    # ----------------------------------------------------------------------------------------- API
    @property
    def arm_target(self) -> np.ndarray:
        """Commanded arm joint positions (7,) [rad] that the servos track (a copy)."""
        return self._arm_target.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode: arm at home (plus ``joint_noise``), gripper open, cube resting on the table.

        options: ``{"cube_xy": (x, y)}`` puts the cube centre exactly at (x, y) [m]; without it the cube goes to
        ``demo_cube_xy(seed)`` (the demo stream of ``envs.positions``: never within 1 mm of an evaluation
        position), with ``seed=None`` a seed drawn from ``self.np_random``. The arm noise comes from
        ``self.np_random``. ``{"variation": spec}`` varies the scene (see the class docstring). Same seed and
        options → same episode, bit for bit.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"cube_xy", "label", "variation"}  # label: the position's name, for an operator
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; supported: ['cube_xy', 'label', "
                             "'variation']")
        spec = options.get("variation") or "none"
        variation.parse(spec)  # a bad spec is refused before anything changes
        if options.get("cube_xy") is None:
            cube_seed = seed if seed is not None else int(self.np_random.integers(2**63))
            cube_xy = demo_cube_xy(cube_seed)
        else:
            cube_xy = np.asarray(options["cube_xy"], dtype=np.float64)
            if cube_xy.shape != (2,) or not np.all(np.isfinite(cube_xy)):
                raise ValueError(f"options['cube_xy'] must be two finite numbers (x, y) [m], got {cube_xy!r}")
        noise = self.np_random.uniform(-self.joint_noise, self.joint_noise, size=7)
        q0 = np.clip(self.home_qpos + noise, self.joint_limits[:, 0], self.joint_limits[:, 1])
        params: variation.Params = {}
        if not variation.is_none(spec):
            scene_seed = seed if seed is not None else int(self.np_random.integers(2**63))
            stream = [SCENE_STREAM, scene_seed] + ([self.scene_index] if self.scene_index else [])
            rng = np.random.default_rng(stream)
            params = variation.sample(spec, rng, cube_xy)
            self._frame_rng = np.random.default_rng(rng.integers(2**63))
        self.scene.apply(params)
        self._cube_rest_z = TABLE_TOP_Z + self.scene.cube_half_size

        m, d = self.model, self.data
        mujoco.mj_resetDataKeyframe(m, d, self._home_key)
        d.qpos[self.arm_qpos_adr] = q0
        d.qpos[self._cube_pos] = (cube_xy[0], cube_xy[1], self._cube_rest_z)
        d.qpos[self._cube_quat] = (1.0, 0.0, 0.0, 0.0)
        self._arm_target = q0.copy()
        self._gripper_cmd = 0.0
        d.ctrl[self._arm_act] = q0
        d.act[self._arm_act_state] = q0
        d.ctrl[self._gripper_act] = FINGER_OPEN
        self._pending = deque([(q0.copy(), FINGER_OPEN)] * self.action_delay)
        mujoco.mj_forward(m, d)
        self._steps = 0
        self._clipped = 0
        return self._observation(), {**self._info(), "variation": params}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one 0.1 s control step; see the class docstring for the action convention."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (8,):
            raise ValueError(f"action must have shape (8,) (7 joint deltas + gripper), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            bad = np.flatnonzero(~np.isfinite(a)).tolist()
            raise ValueError(f"action must be finite, got NaN or inf at index {bad}: {a.tolist()}")
        clipped = np.clip(a, self._act_low, self._act_high)
        if self.action_mode == "delta":
            target = self._arm_target + clipped[:7]
        else:  # the same per-step bound as a delta: at most MAX_JOINT_DELTA from the commanded position
            target = np.clip(clipped[:7], self._arm_target - MAX_JOINT_DELTA, self._arm_target + MAX_JOINT_DELTA)
            clipped[:7] = target
        self._clipped += int(not np.array_equal(clipped, a))
        a = clipped
        self._arm_target = np.clip(target, self.joint_limits[:, 0], self.joint_limits[:, 1])
        self._gripper_cmd = a[7]
        self._pending.append((self._arm_target.copy(), FINGER_OPEN * (1.0 - a[7])))
        arm_ctrl, finger_ctrl = self._pending.popleft()  # this step's own command when action_delay is 0
        d = self.data
        d.ctrl[self._arm_act] = arm_ctrl
        d.ctrl[self._gripper_act] = finger_ctrl
        mujoco.mj_step(self.model, d, nstep=self.n_substeps)
        self._steps += 1

        info = self._info()
        success = info["is_success"]
        terminated = bool(self.terminate_on_success and success)
        truncated = self._steps >= self.max_steps
        return self._observation(), float(success), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The ``video`` camera frame, (H, W, 3) uint8 at ``render_size``; None when render_mode is None."""
        if self.render_mode is None:
            return None
        return self._render("video", self.render_size)

    def close(self) -> None:
        """Free the renderers (their OpenGL contexts); the env stays usable and recreates them lazily."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # ------------------------------------------------------------------------------------- helpers
    def _render(self, camera: str, size: tuple[int, int]) -> np.ndarray:
        renderer = self._renderers.get(size)
        if renderer is None:  # one renderer per image size, created once and reused
            renderer = self._renderers[size] = mujoco.Renderer(self.model, height=size[0], width=size[1])
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()  # (H, W, 3) uint8, a fresh array

    def _observation(self) -> dict[str, np.ndarray]:
        qpos = self.data.qpos
        proprio = np.empty(8, dtype=np.float32)
        proprio[:7] = qpos[self.arm_qpos_adr]
        proprio[7] = qpos[self._finger_qpos].sum()
        obs = {"proprio": proprio}
        size = (self.image_size, self.image_size)
        for cam in self.cameras:
            obs[cam] = self._render(cam, size)
            if self.scene.changes_frames:
                obs[cam] = self.scene.postprocess(obs[cam], self._frame_rng)
        return obs

    def _pads_touch_cube(self) -> bool:
        """Whether both fingers are in contact with the cube (from the last computed contacts)."""
        geoms = self.data.contact.geom  # (ncon, 2)
        if geoms.shape[0] == 0:
            return False
        bodies = self.model.geom_bodyid[geoms]  # (ncon, 2)
        on_cube = (bodies == self._cube_body).any(axis=1)
        other = bodies.sum(axis=1) - self._cube_body  # the body touching the cube, where on_cube
        touching = other[on_cube]
        return bool(np.isin(self._finger_bodies[0], touching) and np.isin(self._finger_bodies[1], touching))

    def _info(self) -> dict[str, Any]:
        d = self.data
        cube_pos = d.qpos[self._cube_pos].copy()
        lift = float(cube_pos[2] - self._cube_rest_z)
        grasped = self._pads_touch_cube()
        success = lift >= LIFT_SUCCESS_HEIGHT and grasped and self._gripper_cmd >= 0.5
        return {
            "cube_pos": cube_pos,
            "cube_quat": d.qpos[self._cube_quat].copy(),
            "fingertip_pos": d.site_xpos[self.fingertip_site].copy(),
            "is_grasped": grasped,
            "lift_height": lift,
            "is_success": bool(success),
            "arm_target": self._arm_target.copy(),
            "clipped_steps": self._clipped,
        }
