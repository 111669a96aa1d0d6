"""The Franka arm and gripper through franky: connect (fast failure), read state, send joint targets, stop.

``FrankyArm`` is the only place that calls franky. It checks that the robot's libfranka port answers before franky
tries (franky's own connect waits ~60 s on an unreachable address), applies the safety config's dynamics factor and
collision thresholds, streams joint targets as asynchronous ``JointMotion``s (each one replaces the running motion
smoothly), switches the gripper only when its command changes, and ``stop()`` ends any motion while leaving the
gripper as it is (a held cube is never dropped). libfranka reflex errors become ``ArmError``s that name the
recovery command.
"""

from __future__ import annotations

import socket
import time
import warnings
from collections.abc import Sequence

import numpy as np

from s2robot.real.safety import SafetyConfig

LIBFRANKA_PORT = 1337  # the robot's command port (the gripper's is 1338)
FINGER_MAX_WIDTH = 0.08  # Franka Hand fully open [m]
RECOVER_HINT = ("clear the error and try again: `python scripts/real_arm.py recover host={host}` (calls "
                "franky's Robot.recover_from_errors), or release and re-engage the user stop")


class ArmError(RuntimeError):
    """The arm is unreachable, refused a command, or stopped with a reflex."""


def check_reachable(host: str, timeout: float = 3.0, port: int = LIBFRANKA_PORT) -> None:
    """ArmError within ``timeout`` seconds unless ``host`` accepts a TCP connection on the libfranka port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise ArmError(
            f"cannot reach a Franka at {host}:{port} within {timeout:.0f} s ({err}). Check that the robot is on and "
            "its brakes are open, that FCI is activated in Desk, that this computer's network cable is in the "
            f"control box (not the arm base), and `ping {host}`. For the simulated rehearsal use host=franky-sim."
        ) from err


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
                           f"robot is in a reflex: {RECOVER_HINT.format(host=host)}") from err
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
            raise ArmError(f"the arm at {self.host} stopped: {err}. {RECOVER_HINT.format(host=self.host)}") from err

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
        s = self.safety
        if closed:  # a grasp of any width: the force holds whatever is between the fingers
            self._gripper_future = self.gripper.grasp_async(0.0, s.gripper_speed, s.grasp_force,
                                                            epsilon_inner=1.0, epsilon_outer=1.0)
        else:
            self._gripper_future = self.gripper.move_async(FINGER_MAX_WIDTH, s.gripper_speed)
        self._gripper_closed = closed

    def open_gripper_blocking(self) -> None:
        """Open the hand fully and wait (used at reset, never mid-episode)."""
        if self._gripper_future is not None:
            self._gripper_future.wait(5.0)
        if not self.gripper.move_async(FINGER_MAX_WIDTH, self.safety.gripper_speed).wait(60.0):
            raise ArmError(f"the hand at {self.host} did not open within 60 s: check it in Desk (homing may help)")
        self._gripper_closed, self._gripper_future = False, None

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
