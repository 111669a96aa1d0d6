"""The franky-sim rehearsal: a simulated FR3 that speaks the libfranka protocol on loopback, with a cube and cameras.

``SimulatedFranka`` builds franky-sim's MuJoCo FR3 scene, adds the 4 cm cube and the cameras, and serves the robot
and its gripper on a free 127.x.y.z address. Everything the arm does then goes through the real client path
(s2robot → franky → libfranka protocol → a robot server); only the robot is simulated. The scene also gives what a
real cell cannot: the cube's pose (to place it and to judge success automatically) and rendered camera frames.

The physics runs in a thread, one 1 ms tick at a time under a lock (so a render or a cube placement never sees a
half-stepped state), paced to real time at most. On 2 cores it runs slower than real time; the env paces its 10 Hz loop
by the robot's own clock (``RobotState.time``), so control is correct at any speed and the wall-clock slowdown is
measured and reported instead of hidden.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence

import numpy as np

from envs.cube_pick import CUBE_HALF_SIZE, SCENE_XML  # also picks MuJoCo's headless GL backend (envs/cube_pick.py)
from s2robot.real.camera import SceneShot
from s2robot.real.camera_timing import CameraTiming, FrameQueue

# Cameras of the rehearsal scene: the policy camera placed as in envs/assets/cube_pick_scene.xml, and a video view.
SCENE_CAMERAS = {
    "front": {"pos": "1.0 0 0.5", "xyaxes": "0 1 0 -0.5684 0 0.8227", "fovy": "55"},
    "video": {"pos": "1.2 -0.9 0.8", "xyaxes": "0.7474 0.6644 0 -0.2963 0.3333 0.8950", "fovy": "45"},
}
LOCKSTEP_WAIT_S = 0.05  # longest a tick waits for the client's command before stepping on without it [s]
SHADOW_SIZE = 1024  # franky-sim's own 4096 shadow map makes one render ~4× dearer (measured on 2 cores)
# No multisampling: franky-sim's 8× costs a 224² frame 47 ms instead of 38 on these CPUs (software GL) and changes
# its pixels by 0.33/255 on average (object edges only); every rendered frame runs while the robot clock stands still
OFF_SAMPLES = 0
# What the rehearsal's cameras see around the arm: franky-sim's own scene (its blue checkered ground and its lights),
# or the simulated env's (its wooden table, grey floor, sky, lights and headlight; visual only, the cube still rests on
# franky-sim's ground), which leaves the FR3 itself as the one visual difference from the simulated env
LOOKS = ("franky-sim", "cube-pick")
HIDDEN_GROUP = "3"  # a geom group mujoco.Renderer does not draw by default: franky-sim's ground in the cube-pick look


def _loopback_candidates() -> Iterator[str]:
    """Loopback addresses for franky-sim's servers to try, from a place set by this process's id: rehearsals in
    parallel processes (evaluation workers) then rarely try the same address at once (franky-sim skips taken ones)."""
    start = os.getpid() % 60_000
    for k in range(60_000):
        n = 2 + (start + k) % 60_000  # 127.0.0.2 … 127.0.234.97; 127.0.0.1 stays for other tools
        yield f"127.0.{n // 256}.{n % 256}"


def normal_priority() -> None:
    """Put every thread of this process that runs at a real-time priority back on the normal scheduler (Linux).

    Connecting a ``franky.Robot`` raises the calling thread to SCHED_FIFO 99 whenever the process may (as root), even
    with ``RealtimeConfig.Ignore``, and every thread started from it later (renderers, motions) inherits that. A real
    arm's 1 kHz loop wants it; a rehearsal does not: its robot is the physics thread, at normal priority on the same
    cores, which a real-time client starves, and so is every other process. On 2 cores, franky-sim evaluation workers
    left their SIGTERMed (even SIGKILLed) parent unscheduled for over a minute, and so running on.
    """
    if not hasattr(os, "sched_setscheduler"):
        return
    for tid in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(tid)) in (os.SCHED_FIFO, os.SCHED_RR):
                os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
        except OSError:  # a thread that ended meanwhile
            pass


class SimulatedFranka:
    """franky-sim's FR3 with a cube and cameras, served on loopback. Use as a context manager or start()/close().

    After ``start()``: ``host`` is the address to give ``franky.Robot``/``franky.Gripper``; ``place_cube``,
    ``cube_pose``, ``fingers_touch_cube`` and ``render`` read or set the scene under the physics lock; ``frame`` is a
    camera's frame as a real camera would deliver it (``camera_timing``: its rate and latency; None: the scene now).
    """

    def __init__(self, cameras: Sequence[str] = ("front",), initial_q: Sequence[float] | None = None,
                 camera_timing: CameraTiming | None = None, camera_seed: int = 0, look: str = LOOKS[0]) -> None:
        unknown = [c for c in cameras if c not in SCENE_CAMERAS]
        if unknown:
            raise ValueError(f"unknown rehearsal camera(s) {unknown}; the scene has {list(SCENE_CAMERAS)}")
        if look not in LOOKS:
            raise ValueError(f"unknown rehearsal look {look!r}; one of {list(LOOKS)}")
        self.look = look
        self.cameras = tuple(cameras)
        self.initial_q = tuple(initial_q) if initial_q is not None else None
        on = camera_timing is not None and camera_timing.on
        self.frames = FrameQueue(camera_timing, camera_seed) if on else None  # captured by the physics thread
        self._shots = 0  # frames handed out by an instantaneous camera (timing off)
        self._placed_at = 0.0  # scene time of the last cube placement [s]
        self.host = ""
        self._lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None
        self._renderers: dict[tuple[int, int], object] = {}
        self._sim = self._server = None
        self.ticks = 0  # physics steps so far (1 ms each)

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> SimulatedFranka:
        """Build the scene, bind the robot and gripper servers and start the physics thread."""
        import mujoco

        try:
            import franky_sim
            from franky_sim.mujoco_simulator import MujocoSimulator
        except ImportError as err:
            raise ImportError("the franky-sim rehearsal needs franky-sim: pip install -e '.[dev]' (or pip install "
                              "franky-sim)") from err
        logging.getLogger("franky_sim").setLevel(logging.WARNING)  # it logs every command at INFO
        sim = MujocoSimulator()
        sim.add_robot(**({"initial_q": self.initial_q} if self.initial_q else {}))
        self._build_scene(sim)
        sim.init()
        self._sim = sim
        self._server = franky_sim.SimulationServer(sim, hostname_candidates=_loopback_candidates())
        self._server.init()
        self.host = self._server.robot_servers[0].hostname
        model = sim.model
        self._cube_qpos = int(model.jnt_qposadr[model.joint("cube_joint").id])
        self._cube_dof = int(model.jnt_dofadr[model.joint("cube_joint").id])
        self._cube_body = model.body("cube").id
        self._finger_bodies = (model.body("robot0_left_finger").id, model.body("robot0_right_finger").id)
        self._captured_data = mujoco.MjData(model)  # a captured frame's state, to render it from
        self._running = True
        self._thread = threading.Thread(target=self._physics, name="franky-sim physics", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the physics thread and the servers; free the renderers."""
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._sim is not None:
            self._sim.cleanup()
            self._sim = None

    def __enter__(self) -> SimulatedFranka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- scene API
    @property
    def sim_time(self) -> float:
        """Simulated time since start [s]."""
        return self.ticks * 1e-3

    def reseed_camera(self, seed: int) -> None:
        """Draw the camera delays of the frames to come from ``seed`` (an episode's); no-op without camera timing."""
        if self.frames is not None:
            with self._lock:
                self.frames.reseed(seed)

    def place_cube(self, xy: Sequence[float], yaw: float = 0.0) -> None:
        """Put the cube at rest on the table with its centre at (x, y) [m] and the given yaw [rad]."""
        import mujoco

        with self._lock:
            d = self._sim.data
            a = self._cube_qpos
            d.qpos[a:a + 3] = (float(xy[0]), float(xy[1]), CUBE_HALF_SIZE)
            d.qpos[a + 3:a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
            d.qvel[self._cube_dof:self._cube_dof + 6] = 0.0
            mujoco.mj_forward(self._sim.model, d)
            self._placed_at = self.sim_time

    def placed_cube_in_view_at(self) -> float:
        """The scene time [s] from which a camera read shows the cube where it was last placed: with camera timing,
        when a frame captured after the placement has surely arrived (the next frame tick, plus the longest delay);
        without, the placement itself."""
        if self.frames is None:
            return self._placed_at
        t = self.frames.timing
        return self._placed_at + t.period + (t.latency_ms + t.jitter_ms) * 1e-3

    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The cube centre (3,) [m] and orientation (4,) (w, x, y, z), in the robot base frame (= world)."""
        with self._lock:
            q = self._sim.data.qpos[self._cube_qpos:self._cube_qpos + 7].copy()
        return q[:3], q[3:]

    def fingers_touch_cube(self) -> bool:
        """Whether both fingers are in contact with the cube (the grasp check of the simulated scene)."""
        with self._lock:
            geoms = self._sim.data.contact.geom.copy()  # (ncon, 2)
        if geoms.shape[0] == 0:
            return False
        bodies = self._sim.model.geom_bodyid[geoms]
        on_cube = (bodies == self._cube_body).any(axis=1)
        touching = (bodies.sum(axis=1) - self._cube_body)[on_cube]
        return all(np.isin(b, touching) for b in self._finger_bodies)

    def render(self, camera: str, height: int, width: int) -> np.ndarray:
        """Frame (height, width, 3) uint8 of a scene camera, rendered from a consistent physics state. The simulated
        clock stands still while it renders (tens of ms on a CPU): a real camera costs the arm no time, and its delays
        are what ``camera_timing`` models."""
        renderer = self._renderer(height, width)
        with self._lock:
            renderer.update_scene(self._sim.data, camera=camera)
            return renderer.render()

    def frame(self, camera: str, height: int, width: int) -> SceneShot | None:
        """The frame (height, width, 3) uint8 a real camera would deliver now: with camera timing, the newest frame
        that has reached the host by now, rendered from the state at its capture (None before the first has); without,
        the scene as it is now. Capture and read times are simulated time [s]."""
        import mujoco

        if self.frames is None:
            with self._lock:
                now = self.sim_time
            self._shots += 1
            return SceneShot(self.render(camera, height, width), now, now, self._shots)
        with self._lock:
            now = self.sim_time
            shot = self.frames.newest(now)
        if shot is None:
            return None
        data, model = self._captured_data, self._sim.model
        data.qpos[:], data.mocap_pos[:], data.mocap_quat[:] = shot.state
        mujoco.mj_kinematics(model, data)
        mujoco.mj_camlight(model, data)
        renderer = self._renderer(height, width)
        with self._lock:  # the clock stands still while it renders, as in render()
            renderer.update_scene(data, camera=camera)
            return SceneShot(renderer.render(), shot.captured, now, shot.index)

    # ------------------------------------------------------------------------------------------- helpers
    def _renderer(self, height: int, width: int) -> object:
        import mujoco

        renderer = self._renderers.get((height, width))
        if renderer is None:
            renderer = self._renderers[(height, width)] = mujoco.Renderer(self._sim.model, height, width)
        return renderer

    def _capture(self) -> None:
        """At a camera frame tick (under the physics lock): keep the state a frame renders from."""
        d = self._sim.data
        self.frames.capture(self.sim_time, (d.qpos.copy(), d.mocap_pos.copy(), d.mocap_quat.copy()))

    def _build_scene(self, sim: object) -> None:
        scene, world = sim.scene, sim.worldbody
        for quality in scene.iter("quality"):
            quality.set("shadowsize", str(SHADOW_SIZE))
            quality.set("offsamples", str(OFF_SAMPLES))
        asset = scene.find("asset")
        ET.SubElement(asset, "material", name="cube", rgba="0.85 0.15 0.12 1", specular="0.2")
        cube = ET.SubElement(world, "body", name="cube", pos=f"0.5 0 {CUBE_HALF_SIZE}")
        ET.SubElement(cube, "freejoint", name="cube_joint")
        s = CUBE_HALF_SIZE
        ET.SubElement(cube, "geom", name="cube", type="box", size=f"{s} {s} {s}", mass="0.05", material="cube",
                      condim="4", friction="1.0 0.005 0.0001")
        for name in self.cameras + tuple(c for c in ("video",) if c not in self.cameras):
            ET.SubElement(world, "camera", name=name, **SCENE_CAMERAS[name])
        if self.look == "cube-pick":
            _dress_as_cube_pick(scene, world)

    def _physics(self) -> None:
        """Step the physics in lockstep with the client, at most as fast as real time.

        A real Franka's client answers every 1 kHz state with a command, or libfranka aborts the motion. franky-sim
        instead steps on with the last command when the client is late (on a busy CPU: every few ticks), and the
        delayed PD loop then shakes the arm, the wrist worst (measured: joint 7 swinging by radians during a 0.02
        rad reset move, in 3 of 6 fresh episodes). So while a motion runs, a tick waits (up to ``LOCKSTEP_WAIT_S``)
        for the client's command to the last state, as the real-time robot would get it; the robot's clock
        (``sim_time``) then shows the slowdown instead of the arm.
        """
        from franky_sim.franka_robot_server import ControlMode

        server, sim, start = self._server, self._sim, time.perf_counter()
        robot = server.robot_servers[0]
        waiting_since = None
        while self._running:
            with self._lock:
                robot.process_commands()
                moving = getattr(robot, "_FrankaRobotServer__control_mode", ControlMode.IDLE) != ControlMode.IDLE
                fresh = getattr(robot, "_FrankaRobotServer__has_new_command", True)
                now = time.perf_counter()
                late = moving and not fresh and (waiting_since is None or now - waiting_since < LOCKSTEP_WAIT_S)
                if not late:
                    sim.step()
                    robot.send_state()
                    self.ticks += 1
                    if self.frames is not None and self.frames.due(self.sim_time):
                        self._capture()
            if late:
                waiting_since = waiting_since or now
                time.sleep(0)  # let franky's thread answer
                continue
            waiting_since = None
            if self.ticks % 10 == 0:  # sleep outside the lock, so renders and cube placements get in
                time.sleep(max(0.0, start + self.sim_time - time.perf_counter()))


def _dress_as_cube_pick(scene: ET.Element, world: ET.Element) -> None:
    """Give franky-sim's scene the simulated env's look, read from its MJCF (``SCENE_XML``): its headlight, skybox,
    floor and table materials, lights, floor and table (drawn only: no contacts); franky-sim's lights go and
    its ground plane stays for the physics, in a geom group renders do not draw. Physics and cameras are unchanged."""
    source = ET.parse(SCENE_XML).getroot()
    headlight = scene.find("visual/headlight")
    headlight.attrib.clear()
    headlight.attrib.update(source.find("visual/headlight").attrib)
    asset = scene.find("asset")
    for element in source.find("asset"):
        if element.get("name") in ("skybox", "floor", "table", "table_leg"):
            asset.append(element)
    for light in world.findall("light"):
        world.remove(light)
    for geom in world.findall("geom"):
        if geom.get("type") == "plane":
            geom.set("group", HIDDEN_GROUP)
    for element in source.find("worldbody"):
        if element.tag == "light" or element.get("name") in ("floor", "table"):
            for geom in element.iter("geom"):
                geom.set("contype", "0")
                geom.set("conaffinity", "0")
            world.append(element)
