"""The Franka arm and gripper through franky: connect (fast failure), read state, send joint targets, stop.

``FrankyArm`` is the only place that calls franky. It checks that the address answers libfranka's connect handshake
before franky tries (franky's own connect waits ~60 s on an unreachable address, and as long on one that accepts the
connection but is no robot), applies the safety config's dynamics factor and collision thresholds, streams joint
targets as asynchronous ``JointMotion``s (each one replaces the running motion smoothly), switches the gripper only
when its command changes, and ``stop()`` ends any motion while leaving the gripper as it is (a held cube is never
dropped). libfranka reflex errors and failed hand commands become ``ArmError``s that name the command to run
(``recover_hint``, ``hand_hint``).
"""

from __future__ import annotations

import socket
import struct
import time
import warnings
from collections.abc import Sequence

import numpy as np

from s2robot.real.safety import SafetyConfig

LIBFRANKA_PORT = 1337  # the robot's command port (the gripper's is 1338)
FINGER_MAX_WIDTH = 0.08  # Franka Hand fully open [m]
# libfranka's wire protocol (research_interface/robot/service_types.h): every TCP message starts with a header of
# three little-endian uint32 (command, command id, size in bytes with the header); Connect is command 0, its request
# carries (uint16 library version, uint16 UDP port for the robot's state), its answer (uint16 status, uint16 version).
_HEADER = struct.Struct("<III")
_CONNECT, _CONNECT_REQUEST, _CONNECT_ANSWER = 0, struct.Struct("<HH"), struct.Struct("<HH")
PROTOCOL_VERSION = 10  # the library version the probe announces (a robot that speaks another still answers)


class ArmError(RuntimeError):
    """The arm is unreachable, refused a command, stopped with a reflex, or its hand failed a command."""


def real_arm_command(action: str, host: str) -> str:
    """A ``scripts/real_arm.py`` command for the robot at ``host`` (``recover``, ``homing``), as its parser takes it."""
    return f"python scripts/real_arm.py {action} --host {host}"


def recover_hint(host: str) -> str:
    """What to do after a reflex (collision, joint limit, a refused motion)."""
    return (f"clear the error and try again: `{real_arm_command('recover', host)}` (calls franky's "
            "Robot.recover_from_errors), or release and re-engage the user stop")


def hand_hint(host: str) -> str:
    """What to do after a failed hand command."""
    return ("The episode is stopped (the arm too). Check the hand and its fingers, then home it: "
            f"`{real_arm_command('homing', host)}` (or in Desk), and reset")


def check_reachable(host: str, timeout: float = 3.0, port: int = LIBFRANKA_PORT) -> None:
    """ArmError within about ``timeout`` seconds unless ``host`` answers libfranka's connect handshake on ``port``:
    a TCP connection, then a ``Connect`` request answered with a ``Connect`` reply (the robot's protocol version).
    A device that accepts the connection but is no Franka (or FCI is off) says nothing, and franky would wait ~60 s."""
    deadline = time.monotonic() + timeout
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        raise ArmError(
            f"cannot reach a Franka at {host}:{port} within {timeout:.0f} s ({err}). Check that the robot is on and "
            "its brakes are open, that FCI is activated in Desk, that this computer's network cable is in the "
            f"control box (not the arm base), and `ping {host}`. For the simulated rehearsal use `env=franka_sim` "
            "(or `python scripts/real_arm.py check --host franky-sim`)."
        ) from err
    with conn, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("", 0))  # where a robot streams its state while connected: closed with the probe
        request = _CONNECT_REQUEST.pack(PROTOCOL_VERSION, udp.getsockname()[1])
        try:
            conn.sendall(_HEADER.pack(_CONNECT, 0, _HEADER.size + len(request)) + request)
            command, command_id, size = _HEADER.unpack(_receive(conn, _HEADER.size, deadline))
            if command != _CONNECT or command_id != 0 or not _HEADER.size + _CONNECT_ANSWER.size <= size <= 256:
                raise ArmError(f"{host}:{port} answered, but not as a Franka does (header {command}, {command_id}, "
                               f"{size}): is this the robot's FCI address? {_NOT_A_ROBOT}")
            _receive(conn, size - _HEADER.size, deadline)  # the status and version: any answer is a robot's
        except TimeoutError as err:
            raise ArmError(f"{host}:{port} accepts connections but did not answer libfranka's handshake within "
                           f"{timeout:.0f} s. {_NOT_A_ROBOT}") from err
        except OSError as err:
            raise ArmError(f"{host}:{port} accepted, then broke off libfranka's handshake ({err}). "
                           f"{_NOT_A_ROBOT}") from err


_NOT_A_ROBOT = ("Is it the robot's FCI address (the control box's, set in Desk), with FCI activated in Desk and no "
                "other program connected to the robot? Another device at that address answers like this too.")


def _receive(conn: socket.socket, n: int, deadline: float) -> bytes:
    """Exactly ``n`` bytes from ``conn`` before ``deadline`` (time.monotonic); TimeoutError after it, OSError when
    the peer closes first."""
    data = b""
    while len(data) < n:
        conn.settimeout(max(deadline - time.monotonic(), 1e-3))
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the connection was closed")
        data += chunk
    return data


def _franky():
    try:
        import franky
    except ImportError as err:
        raise ImportError("talking to a Franka needs franky: pip install -e '.[real]' (or pip install "
                          "franky-control)") from err
    return franky


class FrankyArm:
    """A connected Franka arm (Panda or FR3) and its hand. Joint values in [rad], widths in [m], times in [s]."""

    def __init__(self, host: str, safety: SafetyConfig, connect_timeout: float = 3.0, realtime: bool = False,
                 configure: bool = True) -> None:
        """host: the robot's FCI address. realtime: enforce a real-time kernel (libfranka's default); off here,
        where kernels are not real-time (franky.RealtimeConfig.Ignore). configure: apply the safety config's dynamics
        and collision settings (off only to recover from a reflex, when the robot may refuse them)."""
        check_reachable(host, connect_timeout)
        franky = _franky()
        self.host, self.safety, self._franky = host, safety, franky
        config = franky.RealtimeConfig.Enforce if realtime else franky.RealtimeConfig.Ignore
        try:
            self.robot = franky.Robot(host, realtime_config=config)
            self.gripper = franky.Gripper(host)
            if configure:
                self.robot.relative_dynamics_factor = safety.relative_dynamics_factor
                self.robot.set_collision_behavior(list(safety.torque_threshold), list(safety.force_threshold))
        except franky.Exception as err:
            raise ArmError(f"connected to {host} but franky could not start or configure a session: {err}. If the "
                           f"robot is in a reflex: {recover_hint(host)}") from err
        self.planner_restarts = 0  # targets franky's planner refused mid-motion, sent again from rest
        self._gripper_closed: bool | None = None
        self._gripper_future = None

    # ------------------------------------------------------------------------------------------- state
    def joint_positions(self) -> np.ndarray:
        """Measured joint positions (7,) [rad]."""
        return np.asarray(self.robot.current_joint_state.position, dtype=np.float64)

    def gripper_width(self) -> float:
        """Distance between the fingers [m] (0 closed, 0.08 open)."""
        return float(self.gripper.width)

    def time(self) -> float:
        """The robot's own clock [s] (1 kHz; in franky-sim, simulated time)."""
        return float(self.robot.state.time.to_sec())

    def errors(self) -> str:
        """libfranka's current errors as text ('' when there are none)."""
        state = self.robot.state
        text = str(state.current_errors)
        return text if self.robot.has_errors else ""

    # ------------------------------------------------------------------------------------------- commands
    def move_to(self, q: Sequence[float], asynchronous: bool = True, speed: float | None = None,
                timeout: float = 30.0) -> None:
        """Send a joint target (7,) [rad] (already through the SafetyFilter). Asynchronous targets replace the
        running motion; a blocking move waits at most ``timeout`` seconds on the robot's clock (a rehearsal on a busy
        CPU runs slower than real time, so wall time would misjudge it; 10 × ``timeout`` of wall time if the clock
        stops), then stops the arm and raises. ``speed`` scales this motion's dynamics on top of the global factor."""
        franky = self._franky
        motion = franky.JointMotion([float(v) for v in q], relative_dynamics_factor=speed or 1.0)
        try:
            try:
                self.robot.move(motion, asynchronous=True)
            except RuntimeError as err:  # franky's planner (Ruckig) refused the switch from the current motion
                if "planner" not in str(err):
                    raise
                self.planner_restarts += 1  # stop, then start the same target from rest: a pause, not an abort
                self.stop()
                self.robot.move(motion, asynchronous=True)
            if asynchronous:
                return
            robot_start, wall_start, goal = self.time(), time.perf_counter(), np.asarray(q, dtype=np.float64)
            while not self.robot.join_motion(0.1):
                if self._settled_at(goal):  # there and still, yet not reported finished (seen in franky-sim)
                    self.stop()
                    break
                if self.time() - robot_start > timeout or time.perf_counter() - wall_start > 10 * timeout:
                    self.stop()
                    raise ArmError(f"the arm at {self.host} did not reach its target within {timeout:.0f} s; it is "
                                   "stopped. Is something in the way, or the robot (or franky-sim) not running?")
        except (franky.Exception, RuntimeError) as err:
            self.stop()
            raise ArmError(f"the arm at {self.host} stopped: {err}. {recover_hint(self.host)}") from err

    def _settled_at(self, goal: np.ndarray, tolerance: float = 0.01, still: float = 0.02) -> bool:
        """Whether the measured joints are within ``tolerance`` [rad] of ``goal`` (7,) and slower than ``still``
        [rad/s]: a blocking move that got there is done, whether or not its motion has reported it."""
        state = self.robot.current_joint_state
        return bool(np.abs(np.asarray(state.position) - goal).max() < tolerance
                    and np.abs(np.asarray(state.velocity)).max() < still)

    def set_gripper(self, closed: bool) -> None:
        """Ask for the hand closed (a grasp with ``safety.grasp_force``) or open, without waiting. A hand command runs
        to its end before the next is sent (the hand takes one at a time: a second one sent mid-move blocks), so a
        command that flips back and forth faster than the hand moves is followed at the hand's own pace."""
        busy = self._gripper_future is not None and not self._gripper_future.wait(0.0)
        if busy or closed == self._gripper_closed:
            return
        self.check_gripper()
        s = self.safety
        if closed:  # a grasp of any width: the force holds whatever is between the fingers
            self._gripper_future = self.gripper.grasp_async(0.0, s.gripper_speed, s.grasp_force,
                                                            epsilon_inner=1.0, epsilon_outer=1.0)
        else:
            self._gripper_future = self.gripper.move_async(FINGER_MAX_WIDTH, s.gripper_speed)
        self._gripper_closed = closed

    def check_gripper(self) -> None:
        """ArmError when the hand's last command has finished and failed (libfranka raised, or the hand reports it
        did not get there); nothing while it runs or after it succeeded. Each result is reported once."""
        future = self._gripper_future
        if future is None or not future.wait(0.0):
            return
        self._gripper_future = None
        what = "close (grasp)" if self._gripper_closed else "open"
        try:
            done = bool(future.get())
        except Exception as err:  # franky's CommandException / NetworkException from the hand's server
            raise ArmError(f"the hand at {self.host} failed to {what}: {err}. {hand_hint(self.host)}") from err
        if not done:
            raise ArmError(f"the hand at {self.host} did not {what}: it reports the command unsuccessful (blocked?). "
                           f"{hand_hint(self.host)}")

    def open_gripper_blocking(self) -> None:
        """Open the hand fully and wait (used at reset, never mid-episode); ArmError if it cannot."""
        if self._gripper_future is not None:
            self._gripper_future.wait(5.0)
        self._gripper_future = None  # a failure of the last episode's command is moot once the hand opens
        opening = self.gripper.move_async(FINGER_MAX_WIDTH, self.safety.gripper_speed)
        if not opening.wait(60.0):
            raise ArmError(f"the hand at {self.host} did not open within 60 s. {hand_hint(self.host)}")
        self._gripper_future, self._gripper_closed = opening, False
        self.check_gripper()

    def stop(self) -> None:
        """End every arm motion now (the hand keeps its state: a held cube stays held). Never raises."""
        try:
            self.robot.stop()
            if not self.robot.join_motion(2.0):  # the stopped motion reports its preemption here, not at the next move
                warnings.warn(f"the arm at {self.host} did not confirm its stop within 2 s", RuntimeWarning,
                              stacklevel=2)
        except Exception as err:  # stopping must not fail on top of the error that caused it
            if "preempted" not in str(err):  # the normal end of a stopped motion
                warnings.warn(f"stopping the arm at {self.host}: {err}", RuntimeWarning, stacklevel=2)

    def close(self) -> None:
        """Stop the arm and end franky's sessions (before the robot server goes away: franky's destructors talk to
        it, and a server that is already gone crashed the process). Safe to call twice."""
        if getattr(self, "robot", None) is None:
            return
        self.stop()
        if self._gripper_future is not None:
            self._gripper_future.wait(5.0)
        self.robot = self.gripper = self._gripper_future = None

    def recover(self) -> bool:
        """libfranka's automatic error recovery; whether it succeeded."""
        return bool(self.robot.recover_from_errors())

    def home_gripper(self) -> bool:
        """The hand's homing (it closes, then opens fully to measure its width); whether it succeeded."""
        return bool(self.gripper.homing())
