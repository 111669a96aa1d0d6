"""The Franka arm as a gymnasium env (``s2robot/FrankaReal-v0``), with CubePickEnv's spaces and ``info`` conventions.

Recording, the feature cache, training and evaluation then run on the arm unchanged. ``host="franky-sim"`` starts the
franky-sim rehearsal in this process (``real.rehearsal``): the arm is driven through franky over loopback exactly as a
real one, and the scene places the cube and judges success from its privileged state. Any other host is a real arm:
cameras come from ``camera_sources``, an operator places the cube at each episode's mark and answers whether it was
lifted (``real.judge``).

Each step: check the action (NaN or a wrong shape stops the arm and raises), clip it to the action bounds, turn it
into a joint target, pass the target through the ``SafetyFilter`` (counted), send it as an asynchronous franky
``JointMotion``, switch the gripper if its command changed, then wait for the step's deadline on the robot's clock,
check that the hand's last command did not fail, observe, and check that no joint is further than
``safety.max_tracking_error`` from its target. Any exception or Ctrl-C inside a step stops the arm first; the gripper
keeps its state. The reset move to the start pose passes ``SafetyFilter.check_move`` before it is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.cube_pick import ACTION_MODES, CONTROL_DT, CUBE_REST_Z, LIFT_SUCCESS_HEIGHT
from s2robot.common.timing import LoopTimer
from s2robot.real.arm import FINGER_MAX_WIDTH, ArmError, FrankyArm
from s2robot.real.camera import Camera, open_camera
from s2robot.real.camera_timing import REALSENSE_FPS, REALSENSE_JITTER_MS, REALSENSE_LATENCY_MS, CameraTiming
from s2robot.real.judge import Judge, OperatorJudge, SceneJudge
from s2robot.real.kinematics import fingertip_pose
from s2robot.real.options import SIM_HOST, ArmOptions
from s2robot.real.rehearsal import LOOKS
from s2robot.real.safety import SafetyConfig, SafetyFilter, check_action, check_start, sample_start

HOME_Q = (0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4)  # the simulated env's home pose [rad]


STALL = 0.005  # [rad per 0.1 s step]: a joint far from its target that closes less than this is not following


class FrankaEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Pick up a 4 cm cube with a Franka. Spaces and ``info`` keys as ``envs.CubePickEnv``:

    Action (8,) float32: ``[0:7]`` joint deltas (``action_mode="delta"``) or targets (``"absolute"``) [rad], bounded
        to ``safety.max_joint_step`` per step; ``[7]`` gripper command in [0, 1] (≥ 0.5 closes).
    Observation: ``proprio`` (8,) float32 (7 measured joints [rad] + finger distance [m]); ``<camera>`` (S, S, 3)
        uint8 per camera.
    Info: ``cube_pos`` (3,), ``cube_quat`` (4,) (NaN on a real arm: nothing measures them), ``fingertip_pos`` (3,)
        (forward kinematics of the measured joints), ``is_grasped``, ``lift_height``, ``is_success``,
        ``arm_target`` (7,), ``clipped_steps`` (steps whose action was clipped or changed by the safety filter),
        ``safety`` (intervention counts), and on the last step ``timing`` (``LoopTimer.summary``).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    @staticmethod
    def check_config(joint_noise: float, options: dict[str, Any]) -> None:
        """What ``EnvConfig`` checks when it is built, before anything connects: ``options`` are ``ArmOptions``
        (typed; a misspelt key names the valid ones), and the home pose and ``joint_noise`` pass ``check_start``."""
        arm = ArmOptions.from_options(options)
        check_start(np.asarray(arm.home_q if arm.home_q is not None else HOME_Q), joint_noise, arm.safety)

    def __init__(self, host: str = SIM_HOST, cameras: tuple[str, ...] | list[str] = ("front",), image_size: int = 224,
                 max_steps: int = 100, render_mode: str | None = None, terminate_on_success: bool = True,
                 joint_noise: float = 0.0, action_mode: str = "delta", camera_sources: dict[str, str] | None = None,
                 safety: dict[str, Any] | SafetyConfig | None = None, home_q: list[float] | None = None,
                 render_size: tuple[int, int] = (480, 640), connect_timeout: float = 3.0,
                 stall_timeout_s: float = 1.0, camera_fps: float = REALSENSE_FPS,
                 camera_latency_ms: float = REALSENSE_LATENCY_MS,
                 camera_jitter_ms: float = REALSENSE_JITTER_MS, rehearsal_look: str = LOOKS[0]) -> None:
        """host: the robot's address, or "franky-sim" for the in-process rehearsal. camera_sources: camera name →
        source (``opencv:0``, ``realsense:<serial>``, ``mujoco:<camera>``; the rehearsal defaults to its own scene
        cameras). safety: ``SafetyConfig`` fields. home_q: start pose (7,) [rad] (the simulated env's by default).
        camera_fps, camera_latency_ms, camera_jitter_ms: the rehearsal's cameras' frame timing (``CameraTiming``: a
        RealSense's by default; latency and jitter 0: frames of the scene as it is at the read); a real arm's cameras
        have their own. rehearsal_look: the rehearsal scene's look (``real.rehearsal.LOOKS``)."""
        if isinstance(cameras, str):
            cameras = (cameras,)
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        if max_steps < 1:
            raise ValueError(f"need max_steps ≥ 1, got {max_steps}")
        self.safety_cfg = SafetyConfig.from_options(safety)
        self.cameras, self.image_size, self.max_steps = tuple(cameras), int(image_size), int(max_steps)
        self.render_mode, self.render_size = render_mode, (int(render_size[0]), int(render_size[1]))
        self.terminate_on_success, self.joint_noise, self.action_mode = terminate_on_success, joint_noise, action_mode
        self.home_qpos = np.asarray(home_q if home_q is not None else HOME_Q, dtype=np.float64)
        check_start(self.home_qpos, joint_noise, self.safety_cfg)  # before connecting
        self.filter = SafetyFilter(self.safety_cfg)
        self.camera_timing = CameraTiming(camera_fps, camera_latency_ms, camera_jitter_ms)
        self.rehearsal_look = rehearsal_look
        limits = self.filter.limits
        self.host, self.scene, self.arm, self._cameras, self._frames = host, None, None, {}, {}
        try:
            self._connect(host, camera_sources or {}, connect_timeout, stall_timeout_s)
        except BaseException:
            self.close()
            raise
        step = self.safety_cfg.max_joint_step
        if action_mode == "delta":
            low, high = np.r_[np.full(7, -step), 0.0], np.r_[np.full(7, step), 1.0]
        else:
            low, high = np.r_[limits[:, 0], 0.0], np.r_[limits[:, 1], 1.0]
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        # Clip to the float32 bounds the space advertises: an action at action_space.high (0.1 as float32 is
        # 0.10000000149) is not clipped, as in CubePickEnv.
        self._act_low, self._act_high = (v.astype(np.float32).astype(np.float64) for v in (low, high))
        spaces: dict[str, gym.spaces.Space] = {"proprio": gym.spaces.Box(
            np.r_[limits[:, 0] - 0.1, 0.0].astype(np.float32), np.r_[limits[:, 1] + 0.1, 0.09].astype(np.float32))}
        for cam in self.cameras:
            spaces[cam] = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), dtype=np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self._arm_target = self.home_qpos.copy()
        self._gripper_cmd, self._steps, self._clipped, self._succeeded = 0.0, 0, 0, False
        self.timer = LoopTimer(CONTROL_DT)

    # ------------------------------------------------------------------------------------------- setup
    def _connect(self, host: str, sources: dict[str, str], connect_timeout: float, stall_timeout_s: float) -> None:
        render = None
        if host == SIM_HOST:
            from s2robot.real.rehearsal import SimulatedFranka

            self.scene = SimulatedFranka(self.cameras, self.home_qpos, self.camera_timing,
                                         look=self.rehearsal_look).start()
            render, host = self.scene.frame, self.scene.host  # frames as a real camera delivers them
            sources = {cam: sources.get(cam, f"mujoco:{cam}") for cam in self.cameras}
            self.judge: Judge = SceneJudge(self.scene)
        else:
            missing = [cam for cam in self.cameras if cam not in sources]
            if missing:
                raise ValueError(f"camera(s) {missing} have no source: set camera_sources, e.g. "
                                 "{front: 'realsense:<serial>'} or {front: 'opencv:0'}")
            self.judge = OperatorJudge()
        scene_clock = (lambda: self.scene.sim_time) if self.scene is not None else None  # a rehearsal camera's stall
        for cam in self.cameras:
            self._cameras[cam] = open_camera(cam, sources[cam], self.image_size, stall_timeout_s=stall_timeout_s,
                                             render=render, clock=scene_clock)
        self.arm = FrankyArm(host, self.safety_cfg, connect_timeout)
        if self.scene is not None:
            from s2robot.real.rehearsal import normal_priority

            normal_priority()  # franky made this thread real-time; in a rehearsal it would starve the simulated robot

    # ------------------------------------------------------------------------------------------- API
    @property
    def arm_target(self) -> np.ndarray:
        return self._arm_target.copy()

    @property
    def camera_devices(self) -> dict[str, Camera]:
        """The open cameras by observation name."""
        return dict(self._cameras)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Open the hand, move to the home pose (+ ``joint_noise``, drawn by ``safety.sample_start``) at
        ``safety.home_speed`` after ``SafetyFilter.check_move`` passed the move, then place the cube:
        ``options={"cube_xy": (x, y)}``, else the demo stream's cube of ``seed`` (as ``CubePickEnv``)."""
        from envs.positions import demo_cube_xy

        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"cube_xy", "label"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; supported: ['cube_xy', 'label']")
        if options.get("cube_xy") is None:
            cube_xy = demo_cube_xy(seed if seed is not None else int(self.np_random.integers(2**63)))
        else:
            cube_xy = np.asarray(options["cube_xy"], dtype=np.float64)
        try:
            q0 = sample_start(self.home_qpos, self.joint_noise, self.np_random, self.filter)
            self.arm.stop()
            self.arm.open_gripper_blocking()
            self.filter.check_move(self.arm.joint_positions(), q0, "the reset move")
            self.arm.move_to(q0, asynchronous=False, speed=self.safety_cfg.home_speed)
            self.judge.place(cube_xy, options.get("label"))
            if self.scene is not None:  # the rehearsal's camera delivers frames late: the first must show the cube
                self._wait_until(self.scene.placed_cube_in_view_at(), clock=lambda: self.scene.sim_time)
        except BaseException:
            self.arm.stop()
            raise
        self._arm_target, self._gripper_cmd, self._steps, self._clipped = q0.copy(), 0.0, 0, 0
        self._succeeded = False
        if self.scene is not None and seed is not None:
            self.scene.reseed_camera(seed)  # the camera's delays of this episode come from its seed
        self.filter.reset_counts()
        self.arm.planner_restarts = 0
        self.timer = LoopTimer(CONTROL_DT)
        self._deadline = self.arm.time()
        obs = self._observation()
        self._measured = np.asarray(obs["proprio"][:7], dtype=np.float64)  # (7,) [rad], for the tracking check
        # the room is as it is: no scene variation is ever applied to the arm (sim.env.check_variation refuses one)
        return obs, {**self._info(obs), "variation": {}}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        acted = time.perf_counter()
        try:
            obs, info = self._step(action, acted)
        except BaseException:  # NaN, a reflex, a stalled camera, Ctrl-C: the arm stops, the gripper stays
            self.arm.stop()
            raise
        success = bool(info["is_success"])
        self._succeeded |= success  # as in simulation: lifted while grasped at any step of the episode
        terminated = self.terminate_on_success and success
        truncated = self._steps >= self.max_steps
        if terminated or truncated:
            self.arm.stop()
            info["is_success"] = success = self.judge.final(self._succeeded)
            info["timing"] = self.timer.summary()
        return obs, float(success), terminated, truncated, info

    def end_episode(self) -> bool:
        """End the episode before its last step (an operator pressed Enter): stop the arm (the hand stays as it
        is) and return the judge's verdict; ``timer`` keeps the episode's loop timing."""
        self.arm.stop()
        return self.judge.final(self._succeeded)

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        return self._render("video", self.render_size)

    def close(self) -> None:
        """Stop the arm (the hand keeps its state), close the cameras and the rehearsal. Safe to call twice."""
        if self.arm is not None:
            self.arm.close()  # ends franky's sessions while the rehearsal's server still runs (arm.close)
            self.arm = None
        for cam in self._cameras.values():
            cam.close()
        self._cameras = {}
        if self.scene is not None:
            self.scene.close()
            self.scene = None

    # ------------------------------------------------------------------------------------------- helpers
    def _step(self, action: np.ndarray, acted: float) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        a = check_action(action)
        clipped = np.clip(a, self._act_low, self._act_high)
        target = self._arm_target + clipped[:7] if self.action_mode == "delta" else clipped[:7]
        counts_before = sum(self.filter.counts.values())
        safe = self.filter.apply(target, self._arm_target)
        self._clipped += int(not np.array_equal(clipped, a) or sum(self.filter.counts.values()) > counts_before)
        self.arm.move_to(safe)
        self.arm.set_gripper(clipped[7] >= 0.5)  # the hand follows at its own pace (FrankyArm.set_gripper)
        sent, robot_now = time.perf_counter(), self.arm.time()
        self._deadline += CONTROL_DT
        skipped = 0
        if robot_now > self._deadline:  # late: wait for the next tick of the 10 Hz grid instead of rushing
            skipped = int((robot_now - self._deadline) // CONTROL_DT) + 1
            self._deadline += skipped * CONTROL_DT
        self.timer.add(self._observed, acted, sent, robot_now, skipped, self._frame_age, self._observed_robot)
        self._arm_target, self._gripper_cmd = safe, float(clipped[7])
        self._steps += 1
        self._wait_until(self._deadline)
        self.arm.check_gripper()
        obs = self._observation()
        self._check_tracking(obs["proprio"][:7])
        return obs, self._info(obs)

    def _check_tracking(self, measured: np.ndarray) -> None:
        """ArmError (the step then stops the arm) when a measured joint (7,) [rad] is further than
        ``safety.max_tracking_error`` from its commanded target and did not get closer to it during the step (by
        ``STALL`` at least): the arm is blocked, pushed, or not following. A joint still closing a gap is left to
        follow: a policy may command targets faster than the arm's reduced dynamics move it."""
        measured = np.asarray(measured, dtype=np.float64)
        error = np.abs(measured - self._arm_target)
        closed = np.abs(self._measured - self._arm_target) - error  # how much nearer each joint got this step [rad]
        self._measured = measured
        bad = np.where((error > self.safety_cfg.max_tracking_error) & (closed < STALL), error, 0.0)
        joint = int(bad.argmax())
        if bad[joint] > 0:
            raise ArmError(f"joint {joint + 1} of the arm at {self.arm.host} is {error[joint]:.3f} rad from its "
                           f"commanded target (safety.max_tracking_error: {self.safety_cfg.max_tracking_error} rad): "
                           "something blocks or pushes it, or it is not following; the arm is stopped. Clear its way "
                           "and check it, then reset")

    def _wait_until(self, deadline: float, clock: Callable[[], float] | None = None) -> None:
        """Sleep until the robot clock (or ``clock``, the rehearsal's scene time) reaches ``deadline`` [s]; ArmError
        (the step then stops the arm) if the clock stops (a dead connection, or a rehearsal whose physics stopped)."""
        clock = clock or self.arm.time
        patience = 10 * CONTROL_DT + 5.0  # [s] of wall time
        give_up = time.perf_counter() + patience
        while (left := deadline - clock()) > 0:
            if time.perf_counter() > give_up:
                raise ArmError(f"the robot clock at {self.arm.host} stopped advancing ({patience:.0f} s of wall time "
                               "without reaching the step's deadline): is the connection, or franky-sim, alive?")
            time.sleep(min(left, 0.005))

    def _observation(self) -> dict[str, np.ndarray]:
        proprio = np.empty(8, dtype=np.float32)
        proprio[:7] = self.arm.joint_positions()
        proprio[7] = self.arm.gripper_width()
        obs = {"proprio": proprio}
        ages = []
        for cam, camera in self._cameras.items():
            frame = camera.read()
            obs[cam] = frame.rgb
            ages.append(frame.age)
        known = [a for a in ages if a is not None]  # the rehearsal's cameras know how old their frames are
        self._frame_age = max(known) if known else None
        self._frames = {cam: obs[cam] for cam in self._cameras}  # for videos: the frames the policy saw
        self._last_obs = obs
        self._observed, self._observed_robot = time.perf_counter(), self.arm.time()
        return obs

    def _info(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        cube_pos, cube_quat, grasped = self.judge.state()
        lift = float(cube_pos[2] - CUBE_REST_Z)
        success = bool(lift >= LIFT_SUCCESS_HEIGHT and grasped and self._gripper_cmd >= 0.5)
        return {"cube_pos": cube_pos, "cube_quat": cube_quat,
                "fingertip_pos": fingertip_pose(obs["proprio"][:7].astype(np.float64))[:3, 3],
                "is_grasped": grasped, "lift_height": lift if np.isfinite(lift) else 0.0, "is_success": success,
                "arm_target": self._arm_target.copy(), "clipped_steps": self._clipped,
                "safety": {**self.filter.counts, "planner_restarts": self.arm.planner_restarts}}

    def _render(self, camera: str, size: tuple[int, int]) -> np.ndarray:
        """A frame (H, W, 3) uint8 for videos: the rehearsal's scene camera, or (on a real arm, at the policy's image
        size) the frame the policy saw last, never a second read of a camera."""
        if self.scene is not None:
            return self.scene.render(camera, size[0], size[1])
        if not self._frames:
            return np.zeros((*size, 3), np.uint8)
        return self._frames.get(camera, next(iter(self._frames.values())))

    @property
    def cell(self) -> dict[str, Any]:
        """What a demo store records about this cell (attrs ``cell``): robot, host, camera sources and serials, the
        home pose and the safety limits."""
        return {"robot": self.safety_cfg.robot, "host": self.host, "address": self.arm.host,
                "safety": asdict(self.safety_cfg),
                "home_q": self.home_qpos.tolist(),
                "cameras": {cam: {"source": c.source, "serial": getattr(c, "serial", None)}
                            for cam, c in self._cameras.items()}, "finger_max_width": FINGER_MAX_WIDTH}

    def make_expert(self, noise_std: float = 0.0, rng: np.random.Generator | None = None) -> Any:
        """The scripted expert for this env (``real.expert.ArmExpert``; franky-sim only: it needs the cube's pose)."""
        from s2robot.real.expert import ArmExpert

        return ArmExpert(self, noise_std, rng)
