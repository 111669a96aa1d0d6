"""Cartesian teleop on the pure kinematics: keys move the target, IK tracks it, clamping, lead, gripper, yaw,
sources."""

from __future__ import annotations

import io
import os
import pickle
import pty
import sys
import termios
import types
from functools import partial

import numpy as np
import pytest

from s2robot.real.kinematics import fingertip_pose
from s2robot.real.teleop import (
    KEYMAP,
    LEAD,
    YAW_LEAD,
    CartesianTeleop,
    KeySource,
    ScriptedKeys,
    SpaceMouseSource,
    TeleopAbort,
    TerminalKeys,
    split_keys,
    teleop_policy,
)

HOME_Q = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])  # fingertip (0.307, 0, 0.487)
BOX = (0.25, 0.80, -0.40, 0.40, 0.01, 0.65)
STEP = 0.01


class FakeEnv:
    """What the teleop reads from a ``FrankaEnv``: its safety limits and home posture."""

    def __init__(self) -> None:
        self.unwrapped = self
        self.safety_cfg = types.SimpleNamespace(workspace=list(BOX), max_joint_step=0.1)
        self.home_qpos = HOME_Q.copy()


def _run(teleop: CartesianTeleop, steps: int, q: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The arm tracks every commanded target perfectly: the next measured joints = arm_target + delta."""
    q = HOME_Q.copy() if q is None else q.copy()
    actions = []
    for _ in range(steps):
        obs = {"proprio": np.r_[q, 0.08].astype(np.float32)}
        action = teleop(obs, {"arm_target": q.copy()})
        assert action.shape == (8,) and action.dtype == np.float32
        assert np.abs(action[:7]).max() <= 0.1 + 1e-6
        actions.append(action)
        q = q + action[:7].astype(np.float64)
    return q, actions


def _tip(q: np.ndarray) -> np.ndarray:
    return fingertip_pose(q)[:3, 3]


def test_w_presses_move_the_target_forward_and_the_fingertip_follows() -> None:
    """Three "w" presses move the target +3 steps in x; the IK brings the fingertip within 2 mm of it."""
    start = _tip(HOME_Q)
    teleop = CartesianTeleop(ScriptedKeys([["w"], ["w", "w"]]), FakeEnv(), step=STEP)
    q, _ = _run(teleop, 12)
    np.testing.assert_allclose(teleop.target, start + np.array([3 * STEP, 0, 0]), atol=1e-9)
    assert np.linalg.norm(_tip(q) - teleop.target) < 0.002


def test_a_moves_left_and_r_f_move_up_and_down() -> None:
    """"a" is +y; "r" then "f" cancel in z; the fingertip ends within 2 mm of the target."""
    start = _tip(HOME_Q)
    teleop = CartesianTeleop(ScriptedKeys([["a"], ["a", "r"], ["f"]]), FakeEnv(), step=STEP)
    q, _ = _run(teleop, 12)
    np.testing.assert_allclose(teleop.target, start + np.array([0, 2 * STEP, 0]), atol=1e-9)
    assert np.linalg.norm(_tip(q) - teleop.target) < 0.002


def test_the_target_is_clamped_to_the_workspace_box() -> None:
    """Holding "f" and "s" far past the box's floor and back wall leaves the target on the box's faces."""
    box = (0.28, 0.80, -0.40, 0.40, 0.45, 0.65)
    teleop = CartesianTeleop(ScriptedKeys([["f", "s"]] * 20), workspace=box, max_delta=0.1, step=STEP)
    q, _ = _run(teleop, 30)
    assert teleop.target[0] == pytest.approx(0.28) and teleop.target[2] == pytest.approx(0.45)
    assert np.linalg.norm(_tip(q) - teleop.target) < 0.002


def test_a_held_key_leads_the_fingertip_by_at_most_lead() -> None:
    """A key held while the arm stands still (3 presses a step, a terminal's auto-repeat) leaves the target at most
    ``LEAD`` ahead of the fingertip and the yaw at most ``YAW_LEAD`` ahead: released, the hand stops near there."""
    teleop = CartesianTeleop(ScriptedKeys([["w", "w", "w", "q", "q", "q"]] * 10), FakeEnv(), step=STEP)
    obs = {"proprio": np.r_[HOME_Q, 0.08].astype(np.float32)}
    for _ in range(10):
        teleop(obs, {"arm_target": HOME_Q.copy()})
    np.testing.assert_allclose(teleop.target, _tip(HOME_Q) + np.array([LEAD, 0, 0]), atol=1e-9)
    rot = fingertip_pose(HOME_Q)[:3, :3]
    assert teleop.yaw == pytest.approx(np.arctan2(rot[1, 0], rot[0, 0]) + YAW_LEAD)


def test_space_toggles_the_gripper() -> None:
    """The gripper command goes 0 → 1 → 0 with each space, and stays between presses."""
    teleop = CartesianTeleop(ScriptedKeys([[], [" "], [], [" "]]), FakeEnv())
    _, actions = _run(teleop, 4)
    assert [float(a[7]) for a in actions] == [0.0, 1.0, 1.0, 0.0]


def test_yaw_keys_turn_the_hand_about_z() -> None:
    """Three "q" presses turn the hand's x axis by 3 yaw steps, fingers still pointing down; "e" turns it back."""
    yaw_step = 0.1
    start = fingertip_pose(HOME_Q)[:3, :3]
    teleop = CartesianTeleop(ScriptedKeys([["q"], ["q"], ["q"]]), FakeEnv(), yaw_step=yaw_step)
    q, _ = _run(teleop, 15)
    rot = fingertip_pose(q)[:3, :3]
    turned = np.arctan2(rot[1, 0], rot[0, 0]) - np.arctan2(start[1, 0], start[0, 0])
    assert turned == pytest.approx(3 * yaw_step, abs=0.01)
    assert rot[2, 2] == pytest.approx(-1.0, abs=1e-3)
    teleop.source = ScriptedKeys([["e"] * 3])
    q, _ = _run(teleop, 15, q)
    rot = fingertip_pose(q)[:3, :3]
    assert np.arctan2(rot[1, 0], rot[0, 0]) == pytest.approx(np.arctan2(start[1, 0], start[0, 0]), abs=0.01)


def test_unknown_keys_are_ignored() -> None:
    """Keys outside the keymap (and arrow-key escape sequences) change nothing: the arm holds its start pose."""
    assert split_keys("w\x1b[A \x1b") == ["w", " ", "\x1b"]
    teleop = CartesianTeleop(ScriptedKeys([["z", "1", "\t", "up"]]), FakeEnv())
    _, actions = _run(teleop, 3)
    np.testing.assert_allclose(teleop.target, _tip(HOME_Q), atol=1e-12)
    assert np.abs(np.stack(actions)[:, :7]).max() < 1e-6 and actions[-1][7] == 0.0


def test_enter_sets_done_and_holds_and_esc_aborts() -> None:
    """Enter: ``done``, the source closed, then zero joint deltas with the gripper kept; Esc raises TeleopAbort."""
    closed = []

    class Keys(ScriptedKeys):
        def close(self) -> None:
            closed.append(True)

    teleop = CartesianTeleop(Keys([[" "], ["w"], ["\n"], ["w"]]), FakeEnv())
    _, actions = _run(teleop, 5)
    assert teleop.done and closed
    assert all(np.all(a[:7] == 0) and a[7] == 1.0 for a in actions[2:])
    for key in ("\x1b", "x"):
        with pytest.raises(TeleopAbort):
            _run(CartesianTeleop(ScriptedKeys([[key]]), FakeEnv()), 1)
    assert KEYMAP["\n"][0] == "done"


def test_needs_an_env_or_a_box() -> None:
    """Without an env or a workspace box, or with an inverted box, the constructor says what to pass."""
    with pytest.raises(ValueError, match="workspace"):
        CartesianTeleop(ScriptedKeys([]))
    with pytest.raises(ValueError, match="x_min"):
        CartesianTeleop(ScriptedKeys([]), workspace=(0.8, 0.2, -0.4, 0.4, 0.0, 0.6))


def test_terminal_keys_refuses_a_non_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdin replaced by a StringIO or a pipe: a clear error naming the TTY."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("w"))
    with pytest.raises(RuntimeError, match="not a TTY"):
        TerminalKeys()
    read, write = os.pipe()
    with os.fdopen(read) as pipe, pytest.raises(RuntimeError, match="not a TTY"):
        os.close(write)
        TerminalKeys(pipe)


def test_terminal_keys_reads_a_pty_without_blocking_and_restores_it() -> None:
    """On a pseudo-terminal: cbreak while open, typed keys come back once, and close restores the settings."""
    master, slave = pty.openpty()
    with os.fdopen(slave, "r") as stream:
        before = termios.tcgetattr(slave)
        keys = TerminalKeys(stream, show_help=False)
        assert not termios.tcgetattr(slave)[3] & termios.ICANON
        assert keys.poll() == []
        os.write(master, b"wa \x1b[A")
        assert keys.poll() == ["w", "a", " "]
        assert keys.poll() == []
        keys.close()
        keys.close()
        assert termios.tcgetattr(slave) == before
    os.close(master)


class _FakeSpaceMouse:
    """A stand-in ``pyspacemouse`` module: ``read()`` returns the next scripted state."""

    def __init__(self, states: list[dict]) -> None:
        self.states, self.opened, self.closed = states, False, False

    def open(self) -> bool:
        self.opened = True
        return True

    def read(self) -> types.SimpleNamespace:
        state = {"x": 0.0, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0, "yaw": 0.0, "buttons": [0, 0],
                 **(self.states.pop(0) if self.states else {})}
        return types.SimpleNamespace(**state)

    def close(self) -> None:
        self.closed = True


def test_spacemouse_moves_toggles_and_has_a_deadband(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full +x deflection moves the target +x one step per step; a reading in the deadband does nothing; a button
    press (not its hold) toggles the gripper."""
    fake = _FakeSpaceMouse([{"x": 1.0}, {"x": 0.05, "y": -0.08, "yaw": 0.09}, {"buttons": [1, 0]},
                            {"buttons": [1, 0]}, {"buttons": [0, 0]}, {"buttons": [1, 0]}])
    monkeypatch.setitem(sys.modules, "pyspacemouse", fake)
    source = SpaceMouseSource(deadband=0.1)
    teleop = CartesianTeleop(source, FakeEnv(), step=STEP)
    _, actions = _run(teleop, 6)
    np.testing.assert_allclose(teleop.target, _tip(HOME_Q) + np.array([STEP, 0, 0]), atol=1e-9)
    assert teleop.yaw == pytest.approx(0.0, abs=1e-6)  # the start pose's hand yaw
    assert [float(a[7]) for a in actions] == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    teleop.close()
    assert fake.opened and fake.closed


def test_spacemouse_without_pyspacemouse_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pyspacemouse: an ImportError telling how to install it."""
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)
    with pytest.raises(ImportError, match="pip install pyspacemouse"):
        SpaceMouseSource()


def test_teleop_policy_is_a_picklable_factory_opening_its_source_lazily() -> None:
    """The factory pickles, builds a teleop per episode, opens the source at the first poll (after the env's
    reset), and closes the previous episode's source when the next episode starts."""
    opened: list[KeySource] = []

    class Keys(ScriptedKeys):
        closed = False

        def close(self) -> None:
            self.closed = True

    def make() -> KeySource:
        opened.append(Keys([["w"]]))
        return opened[-1]

    scripted = teleop_policy(partial(ScriptedKeys, [["w"]]), step=0.02)
    _run(scripted(FakeEnv(), 0), 1)  # a live source is not part of the pickled state
    assert pickle.loads(pickle.dumps(scripted)).options == {"step": 0.02}
    factory = teleop_policy(make)
    first = factory(FakeEnv(), 0)
    assert opened == []
    _run(first, 2)
    assert len(opened) == 1 and not opened[0].closed
    second = factory(FakeEnv(), 1)
    assert opened[0].closed and second is not first
