"""Connecting to the arm fails fast, naming the host: a closed port, a silent host, a host that accepts but is no
robot, through the env; franky's refusals and the hand's failed commands become ArmErrors."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
    """A refused connection is an ArmError within 2 s whose message names host:port and how to rehearse instead."""
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(ArmError, match=f"127.0.0.1:{port}") as err:
        check_reachable("127.0.0.1", timeout=1.0, port=port)
    assert time.monotonic() - start < 2.0
    assert "`env=franka_sim`" in str(err.value) and "--host franky-sim" in str(err.value)
    assert isinstance(err.value.__cause__, OSError)


@contextmanager
def answering_server(answer: bytes) -> Iterator[tuple[int, list[bytes]]]:
    """A loopback port whose server accepts one connection, reads the 16-byte request, sends ``answer`` and closes;
    yields the port and the requests it read."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    requests: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            requests.append(conn.recv(16))
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], requests
    finally:
        thread.join(timeout=5.0)
        server.close()


# libfranka's Connect answer (header: command 0, command id 0, 20 bytes; status kSuccess, version 10, padding), as
# franky-sim's server sends it
FRANKA_ANSWER = struct.pack("<III", 0, 0, 20) + struct.pack("<HH4x", 0, 10)


def test_check_reachable_a_franka_answering_the_handshake_passes() -> None:
    """A server that answers libfranka's Connect request as a robot does passes; the request it got is a Connect."""
    with answering_server(FRANKA_ANSWER) as (port, requests):
        check_reachable("127.0.0.1", timeout=3.0, port=port)
    command, command_id, size, _version, udp_port = struct.unpack("<IIIHH", requests[0])
    assert (command, command_id, size) == (0, 0, 16) and udp_port > 0


def test_check_reachable_a_host_that_accepts_and_says_nothing_is_refused() -> None:
    """A host that accepts the TCP connection but never answers the handshake (a device that is no Franka, FCI off)
    is an ArmError within the 3 s bound (not franky's ~60 s), saying so and naming host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # the kernel completes the connection; nobody ever reads or answers
        port = server.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(ArmError, match=f"127.0.0.1:{port} accepts connections but did not answer libfranka's "
                                           "handshake within 3 s.*FCI"):
            check_reachable("127.0.0.1", port=port)
        assert time.monotonic() - start < 10.0  # generous: 3 s, plus whatever a loaded CI machine adds


@pytest.mark.parametrize("answer", [b"HTTP/1.1 400 Bad Request\r\n\r\n", b""])
def test_check_reachable_a_host_that_answers_otherwise_is_refused(answer: bytes) -> None:
    """A host that answers something else (a web server) or hangs up is an ArmError saying it is not a Franka's."""
    with answering_server(answer) as (port, _), pytest.raises(ArmError, match=f"127.0.0.1:{port} .*FCI address"):
        check_reachable("127.0.0.1", timeout=3.0, port=port)


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


class _DoneFuture:
    """A finished franky BoolFuture: its result, or the exception libfranka raised."""

    def __init__(self, result: bool | Exception) -> None:
        self.result = result

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def get(self) -> bool:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class _FakeHand:
    """franky.Gripper's async commands, each finished at once with ``result``."""

    def __init__(self, result: bool | Exception) -> None:
        self.result, self.sent = result, []

    def grasp_async(self, *args: float, **kwargs: float) -> _DoneFuture:
        self.sent.append("grasp")
        return _DoneFuture(self.result)

    def move_async(self, *args: float) -> _DoneFuture:
        self.sent.append("move")
        return _DoneFuture(self.result)


def _arm_with_hand(hand: _FakeHand) -> FrankyArm:
    arm = _arm_with(_FakeRobot(refusals=0))
    arm.gripper, arm._gripper_closed, arm._gripper_future = hand, None, None
    return arm


@pytest.mark.parametrize(("result", "match"), [(RuntimeError("command failed: grasp: object lost"), "failed to close"),
                                               (False, "did not close")])
def test_a_failed_hand_command_is_reported_once(result: bool | Exception, match: str) -> None:
    """A grasp that libfranka reports failed (an exception, or False) is an ArmError naming the hand and the homing
    command, reported once; a successful one is silent."""
    pytest.importorskip("franky")
    arm = _arm_with_hand(_FakeHand(result))
    arm.set_gripper(True)
    with pytest.raises(ArmError, match=f"hand at fake {match}.*real_arm.py homing --host fake"):
        arm.check_gripper()
    arm.check_gripper()  # reported once
    ok = _arm_with_hand(_FakeHand(True))
    ok.set_gripper(True)
    ok.check_gripper()
    assert ok._gripper_future is None


def test_a_hand_that_cannot_open_at_reset_is_an_arm_error() -> None:
    """The blocking open at reset raises when the hand reports the move unsuccessful."""
    pytest.importorskip("franky")
    with pytest.raises(ArmError, match="did not open"):
        _arm_with_hand(_FakeHand(False)).open_gripper_blocking()
