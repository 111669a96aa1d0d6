"""Connecting to the arm fails fast, naming the host: a closed port, a silent host, through the env."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from s2robot.real.arm import LIBFRANKA_PORT, ArmError, FrankyArm, check_reachable
from s2robot.real.env import FrankaEnv
from s2robot.real.safety import SafetyConfig


def closed_port() -> int:
    """A loopback port nothing listens on (bound once to pick it, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_host() -> Iterator[str]:
    """A loopback address whose libfranka port never answers: its accept queue is full, so the kernel drops SYNs
    (as a switched-off robot or a wrong subnet does; a TEST-NET address is no substitute: on some networks, this
    sandbox's included, it is the gateway and refuses at once)."""
    for last in range(200, 255):
        host = f"127.0.0.{last}"
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            server.bind((host, LIBFRANKA_PORT))
        except OSError:
            server.close()
            continue
        server.listen(0)
        filler = socket.create_connection((host, LIBFRANKA_PORT), timeout=1.0)  # fills the queue; never accepted
        try:
            yield host
        finally:
            filler.close()
            server.close()
        return
    pytest.fail("no free loopback address for a silent host")


def test_check_reachable_silent_host_times_out(silent_host: str) -> None:
    """A host that never answers is an ArmError after the timeout (not before, not much after), naming it."""
    start = time.monotonic()
    with pytest.raises(ArmError, match=f"cannot reach a Franka at {silent_host}:{LIBFRANKA_PORT}"):
        check_reachable(silent_host, timeout=1.0)
    assert 0.9 < time.monotonic() - start < 2.0


def test_check_reachable_closed_port() -> None:
    """A refused connection is an ArmError within 2 s whose message names host:port and the rehearsal host."""
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(ArmError, match=f"127.0.0.1:{port}") as err:
        check_reachable("127.0.0.1", timeout=1.0, port=port)
    assert time.monotonic() - start < 2.0
    assert "host=franky-sim" in str(err.value)
    assert isinstance(err.value.__cause__, OSError)


def test_check_reachable_open_port() -> None:
    """A listening port passes silently."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        check_reachable("127.0.0.1", timeout=1.0, port=server.getsockname()[1])


def test_arm_silent_host_fails_fast(silent_host: str) -> None:
    """FrankyArm on an address that never answers raises ArmError within its timeout (not franky's ~60 s)."""
    start = time.monotonic()
    with pytest.raises(ArmError, match=f"cannot reach a Franka at {silent_host}"):
        FrankyArm(silent_host, SafetyConfig(), connect_timeout=1.0)
    assert time.monotonic() - start < 3.0


def test_env_silent_host_fails_fast(silent_host: str) -> None:
    """FrankaEnv on a host that never answers raises ArmError naming it within ~3 s."""
    start = time.monotonic()
    with pytest.raises(ArmError, match=f"cannot reach a Franka at {silent_host}"):
        FrankaEnv(host=silent_host, cameras=[], connect_timeout=1.0)
    assert time.monotonic() - start < 3.0


def test_env_real_host_needs_camera_sources() -> None:
    """A real host with cameras but no camera_sources is a ValueError naming the camera, before any connect."""
    with pytest.raises(ValueError, match=r"front.*camera_sources"):
        FrankaEnv(host="192.0.2.1", cameras=["front"], connect_timeout=1.0)


class _FakeRobot:
    """franky.Robot's move/stop/join_motion, whose planner refuses the first ``refusals`` targets."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.moves, self.stops = refusals, [], 0

    def move(self, motion: object, asynchronous: bool = False) -> None:
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("Motion planner failed with error code -101")
        self.moves.append(motion)

    def stop(self) -> None:
        self.stops += 1

    def join_motion(self, timeout: float | None = None) -> bool:
        return True


def _arm_with(robot: _FakeRobot) -> FrankyArm:
    import franky

    arm = FrankyArm.__new__(FrankyArm)  # no connection: the fake stands in for franky's Robot
    arm.host, arm.safety, arm._franky, arm.robot, arm.planner_restarts = "fake", SafetyConfig(), franky, robot, 0
    return arm


def test_a_refused_target_is_sent_again_from_rest_and_counted() -> None:
    """franky's planner refusing a mid-motion switch stops the arm and sends the target once more, counted."""
    pytest.importorskip("franky")
    robot = _FakeRobot(refusals=1)
    arm = _arm_with(robot)
    arm.move_to([0.0] * 7)
    assert len(robot.moves) == 1 and robot.stops == 1 and arm.planner_restarts == 1


def test_a_target_refused_twice_stops_the_arm_and_names_the_recovery() -> None:
    """A second refusal is an ArmError (the arm stopped, the recovery command named), never a silent skip."""
    pytest.importorskip("franky")
    robot = _FakeRobot(refusals=2)
    with pytest.raises(ArmError, match=r"planner failed.*recover"):
        _arm_with(robot).move_to([0.0] * 7)
    assert robot.moves == [] and robot.stops == 2
