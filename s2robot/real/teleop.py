"""Cartesian teleoperation for recording demos on a real arm, where no scripted expert exists.

``CartesianTeleop`` holds a fingertip target (position [m] and yaw [rad], hand pointing down as
``envs.expert.hand_rotation``), moves it by the operator's commands each control step, keeps it within ``lead`` of
the hand and inside the workspace box, and returns the env's action (8,): the joint deltas of the scripted expert's
IK step (``envs.expert.ik_delta`` with ``real.kinematics``) towards the target, and the gripper command. Commands
come from a ``KeySource``: ``ScriptedKeys`` (tests), ``TerminalKeys`` (keyboard, ``KEYMAP``), ``SpaceMouseSource``
(``pyspacemouse``) or, in the rehearsal, ``real.operator.ScriptedOperator``.

Ending an episode: the recorder (``sim.episode.run_episode``) ends an episode only when the env terminates or
truncates, or when the policy reports ``done``. The operator presses Enter when the task is done: the teleop sets
``done``, closes its source (the terminal is restored for the judge's "was the cube lifted?" prompt) and returns the
hold action (zero joint deltas, gripper kept); the recording loop then ends the episode through the env's
``end_episode`` (the arm stops, the judge answers: the operator on a real arm). Esc or x raises
``TeleopAbort``, which stops recording (episodes already stored stay).
"""

from __future__ import annotations

import atexit
import os
import select
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from envs.expert import ExpertConfig, hand_rotation, ik_delta, limit_norm
from s2robot.real.kinematics import fingertip_jacobian, fingertip_pose

# key -> (command, what it does). Motion commands move the target by one ``step`` [m] or ``yaw_step`` [rad].
KEYMAP: dict[str, tuple[str, str]] = {
    "w": ("+x", "forward (+x)"),
    "s": ("-x", "back (-x)"),
    "a": ("+y", "left (+y)"),
    "d": ("-y", "right (-y)"),
    "r": ("+z", "up (+z)"),
    "f": ("-z", "down (-z)"),
    "q": ("+yaw", "turn the hand counter-clockwise (+yaw)"),
    "e": ("-yaw", "turn the hand clockwise (-yaw)"),
    " ": ("gripper", "toggle the gripper (close / open)"),
    "\n": ("done", "end the episode (the arm stops; on a real arm you are then asked whether it lifted)"),
    "\r": ("done", "end the episode"),
    "\x1b": ("abort", "abort recording"),
    "x": ("abort", "abort recording"),
}
# command -> unit increment of the target (x, y, z, yaw)
_MOTION: dict[str, tuple[float, float, float, float]] = {
    "+x": (1, 0, 0, 0), "-x": (-1, 0, 0, 0), "+y": (0, 1, 0, 0), "-y": (0, -1, 0, 0),
    "+z": (0, 0, 1, 0), "-z": (0, 0, -1, 0), "+yaw": (0, 0, 0, 1), "-yaw": (0, 0, 0, -1),
}
GRIPPER_KEY, DONE_KEY = " ", "\n"
YAW_LIMIT = np.pi / 2  # the two-finger hand is symmetric under a half turn: ±90° reaches every grasp [rad]
LEAD = 0.04  # farthest the target runs ahead of the fingertip [m]: one IK step (CartesianTeleop's speed)
YAW_LEAD = 0.3  # farthest the target yaw runs ahead of the hand's [rad]: two IK rotation steps (0.15 rad each)


class TeleopAbort(RuntimeError):
    """The operator aborted (Esc or x)."""


def keymap_help() -> str:
    """The keymap as printed once for the operator."""
    names = {" ": "space", "\n": "Enter", "\x1b": "Esc"}
    return "teleop keys:\n" + "\n".join(f"  {names.get(k, k):>5}  {what}" for k, (_, what) in KEYMAP.items()
                                        if k != "\r")


# ------------------------------------------------------------------------------------------- input sources
class KeySource:
    """Operator input. ``poll()`` returns the keys pressed since the last poll; ``axes()`` (4,) continuous motion
    (x, y, z, yaw) in units of the teleop's ``step``/``yaw_step`` this control step (zero for keyboards).
    ``observe(obs, info)`` comes first each control step with what the arm shows (a person sees it; a scripted
    operator, ``real.operator``, reads it)."""

    def observe(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        pass

    def poll(self) -> list[str]:
        raise NotImplementedError

    def axes(self) -> np.ndarray:
        return np.zeros(4)

    def close(self) -> None:
        pass


class ScriptedKeys(KeySource):
    """Keys from a script: ``sequence[i]`` is what poll ``i`` returns; nothing once the script has run out."""

    def __init__(self, sequence: Sequence[Sequence[str]]) -> None:
        self.sequence, self.index = [list(keys) for keys in sequence], 0

    def poll(self) -> list[str]:
        keys = self.sequence[self.index] if self.index < len(self.sequence) else []
        self.index += 1
        return keys


def split_keys(text: str) -> list[str]:
    """Keys in terminal input: one per character, with escape sequences (arrow keys: ``ESC [ A``) dropped so that
    only a lone Esc reads as Esc."""
    keys, i = [], 0
    while i < len(text):
        if text[i] == "\x1b" and i + 1 < len(text) and text[i + 1] in "[O":
            i += 2
            while i < len(text) and not (text[i].isalpha() or text[i] == "~"):
                i += 1
            i += 1
            continue
        keys.append(text[i])
        i += 1
    return keys


class TerminalKeys(KeySource):
    """Keys typed into the terminal, read without blocking (cbreak mode: no Enter needed, no echo; Ctrl-C still
    interrupts). The terminal is restored on ``close``, on an exception while polling, and at interpreter exit."""

    def __init__(self, stream: TextIO | None = None, show_help: bool = True) -> None:
        import termios
        import tty

        stream = stream if stream is not None else sys.stdin
        if not stream.isatty():
            raise RuntimeError("TerminalKeys reads keys from an interactive terminal, but stdin is not a TTY (a pipe, "
                               "a file or a batch job): run the recording in a terminal, or use ScriptedKeys / "
                               "SpaceMouseSource")
        self.fd = stream.fileno()
        self._saved: list[Any] | None = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        atexit.register(self.close)
        if show_help:
            print(keymap_help(), flush=True)

    def poll(self) -> list[str]:
        if self._saved is None:
            return []
        try:
            data = b""
            while select.select([self.fd], [], [], 0)[0]:
                chunk = os.read(self.fd, 1024)
                if not chunk:
                    break
                data += chunk
            return split_keys(data.decode(errors="ignore"))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Restore the terminal (and drop keys typed after the last poll, so they reach no later prompt)."""
        if self._saved is None:
            return
        import termios

        termios.tcsetattr(self.fd, termios.TCSAFLUSH, self._saved)
        self._saved = None
        atexit.unregister(self.close)


class SpaceMouseSource(KeySource):
    """A 3Dconnexion SpaceMouse through ``pyspacemouse``: x/y/z/yaw deflections (each in [-1, 1]) beyond
    ``deadband`` move the target continuously (full deflection: one ``step`` per control step), button 0 toggles
    the gripper and button 1 ends the episode. ``signs`` flips axes to match how the device sits before the arm."""

    def __init__(self, deadband: float = 0.1, signs: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> None:
        try:
            import pyspacemouse
        except ImportError as err:
            raise ImportError("SpaceMouseSource needs pyspacemouse: pip install pyspacemouse (and the hidapi "
                              "system library), or use TerminalKeys") from err
        if not 0 <= deadband < 1 or len(signs) != 4:
            raise ValueError(f"need deadband in [0, 1) and 4 axis signs, got {deadband}, {signs}")
        self.device, self.deadband, self.signs = pyspacemouse, float(deadband), np.asarray(signs, dtype=np.float64)
        if not pyspacemouse.open():
            raise RuntimeError("pyspacemouse found no SpaceMouse: is it plugged in, and may this user read it "
                               "(udev rule for hidraw)?")
        self._axes, self._buttons = np.zeros(4), [0, 0]

    def poll(self) -> list[str]:
        state = self.device.read()
        raw = np.array([state.x, state.y, state.z, state.yaw], dtype=np.float64)
        # Rescaled past the deadband so motion starts from zero rather than jumping to ``deadband``.
        self._axes = self.signs * np.sign(raw) * np.clip((np.abs(raw) - self.deadband) / (1 - self.deadband), 0, 1)
        buttons = [*state.buttons, 0, 0][:2]  # devices with one button read as if the second were up
        keys = [key for key, now, before in zip((GRIPPER_KEY, DONE_KEY), buttons, self._buttons, strict=True)
                if now and not before]
        self._buttons = buttons
        return keys

    def axes(self) -> np.ndarray:
        return self._axes.copy()

    def close(self) -> None:
        close = getattr(self.device, "close", None)
        if close is not None:
            close()


# ------------------------------------------------------------------------------------------- the controller
class CartesianTeleop:
    """A ``Policy``: operator commands → fingertip target → the env's action (8,) float32 (joint deltas from
    ``info["arm_target"]`` [rad], gripper 1 closed / 0 open).

    source: the operator's input (polled once per control step); env: a ``FrankaEnv`` (or its wrapper) that gives
    the workspace box, the per-step joint bound and the home posture; otherwise pass workspace
    (x_min, x_max, y_min, y_max, z_min, z_max) [m] and max_delta [rad]. step: target travel per key press [m];
    yaw_step: hand turn per key press [rad]; speed: max fingertip travel per control step [m]. lead, yaw_lead: how
    far the target may run ahead of the fingertip [m] and of the hand's yaw [rad]. The arm follows at ~1.5 cm a step
    while a held key (auto-repeat ~30 presses/s) moves the target 3 cm a step; without the bound, a key held for 1 s
    left the target 20 cm ahead and the hand moved on for 2 s after its release (measured in franky-sim). With it the
    hand stops within about ``lead`` of where it was when the key was released.
    """

    def __init__(self, source: KeySource, env: Any | None = None, *, workspace: Sequence[float] | None = None,
                 max_delta: float | None = None, step: float = 0.01, yaw_step: float = 0.1, speed: float = 0.04,
                 lead: float = LEAD, yaw_lead: float = YAW_LEAD, config: ExpertConfig | None = None) -> None:
        unwrapped = getattr(env, "unwrapped", env)
        if workspace is None and unwrapped is None:
            raise ValueError("CartesianTeleop needs the env (for its safety.workspace) or a workspace box")
        box = np.asarray(workspace if workspace is not None else unwrapped.safety_cfg.workspace, dtype=np.float64)
        if box.shape != (6,) or not np.all(box[0::2] < box[1::2]):
            raise ValueError(f"workspace must be (x_min, x_max, y_min, y_max, z_min, z_max) [m], got {box.tolist()}")
        if max_delta is None:
            max_delta = unwrapped.safety_cfg.max_joint_step if unwrapped is not None else 0.1
        if not (step > 0 and yaw_step > 0 and speed > 0 and max_delta > 0 and lead > 0 and yaw_lead > 0):
            raise ValueError(f"step, yaw_step, speed, max_delta, lead and yaw_lead must be > 0, got {step}, "
                             f"{yaw_step}, {speed}, {max_delta}, {lead}, {yaw_lead}")
        self.source, self.low, self.high = source, box[0::2], box[1::2]  # (3,), (3,)
        self.max_delta, self.step, self.yaw_step, self.speed = float(max_delta), step, yaw_step, speed
        self.lead, self.yaw_lead = lead, yaw_lead
        self.home_q = None if unwrapped is None else np.asarray(unwrapped.home_qpos, dtype=np.float64)
        self.config = config or ExpertConfig()
        self.target: np.ndarray | None = None  # (3,) fingertip goal [m]; set from the fingertip at the first call
        self.yaw, self.gripper, self.done = 0.0, 0.0, False

    def __call__(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        try:
            return self._act(obs, info)
        except BaseException:  # an abort, a bad key source, Ctrl-C: give the terminal back first
            self.close()
            raise

    def close(self) -> None:
        self.source.close()

    def _act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        q = np.asarray(obs["proprio"][:7], dtype=np.float64)
        pose = fingertip_pose(q)
        tip, rot_now = pose[:3, 3], pose[:3, :3]
        tip_yaw = float(np.arctan2(rot_now[1, 0], rot_now[0, 0]))
        if self.target is None:
            self.target = np.clip(tip, self.low, self.high)
            self.yaw = float(np.clip(tip_yaw, -YAW_LIMIT, YAW_LIMIT))
            if self.home_q is None:
                self.home_q = q.copy()  # no env: the null space holds the posture the episode started in
        action = np.zeros(8, dtype=np.float32)
        if not self.done:
            self.source.observe(obs, info)
            self._apply(self.source.poll(), self.source.axes(), tip, tip_yaw)
        if self.done:  # the hold action: stay at the commanded target, gripper as it is
            action[7] = self.gripper
            return action
        action[:7] = ik_delta(self.config, fingertip_jacobian(q), rot_now, tip, self.target, self.speed,
                              hand_rotation(self.yaw), q, self.home_q, np.asarray(info["arm_target"]), self.max_delta)
        action[7] = self.gripper
        return action

    def _apply(self, keys: list[str], axes: np.ndarray, tip: np.ndarray, tip_yaw: float) -> None:
        """Move the target by the keys (unknown ones ignored) and the continuous axes (4,), then clamp it: to within
        ``lead`` of the fingertip ``tip`` (3,) [m] and ``yaw_lead`` of its yaw [rad], and into the workspace box."""
        move = np.asarray(axes, dtype=np.float64).copy()  # (x, y, z, yaw) in steps
        for key in keys:
            command = KEYMAP.get(key.lower() if len(key) == 1 else key, (None,))[0]
            if command in _MOTION:
                move += _MOTION[command]
            elif command == "gripper":
                self.gripper = 1.0 - self.gripper
            elif command == "done":
                self.done = True
                self.close()
                return
            elif command == "abort":
                raise TeleopAbort("the operator aborted teleoperation (Esc / x)")
        ahead = limit_norm(self.target + self.step * move[:3] - tip, self.lead)
        self.target = np.clip(tip + ahead, self.low, self.high)
        turn = (self.yaw + self.yaw_step * move[3] - tip_yaw + np.pi) % (2 * np.pi) - np.pi  # in [-π, π)
        turn = np.clip(turn, -self.yaw_lead, self.yaw_lead)
        self.yaw = float(np.clip(tip_yaw + turn, -YAW_LIMIT, YAW_LIMIT))


# ------------------------------------------------------------------------------------------- recording
@dataclass
class _TeleopFactory:
    source_factory: Callable[[], KeySource]
    options: dict[str, Any]
    name: str = "cartesian teleop"  # what the demo store's attrs say recorded it
    _live: list[CartesianTeleop] = field(default_factory=list, repr=False, compare=False)

    def __call__(self, env: Any, seed: int) -> CartesianTeleop:
        self.close()  # the previous episode's source (the episode ended at max_steps without Enter)
        teleop = CartesianTeleop(_LazySource(self.source_factory), env, **self.options)
        self._live.append(teleop)
        return teleop

    def close(self) -> None:
        while self._live:
            self._live.pop().close()

    def __getstate__(self) -> dict[str, Any]:
        return {"source_factory": self.source_factory, "options": self.options, "name": self.name, "_live": []}


class _LazySource(KeySource):
    """Opens the real source at the first poll: after the env's reset, so the judge's "place the cube" prompt
    (``real.judge.OperatorJudge``) runs in a normal terminal."""

    def __init__(self, factory: Callable[[], KeySource]) -> None:
        self.factory, self.source, self.closed = factory, None, False

    def observe(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        if not self.closed:
            self._open().observe(obs, info)

    def poll(self) -> list[str]:
        return [] if self.closed else self._open().poll()

    def _open(self) -> KeySource:
        if self.source is None:
            self.source = self.factory()
        return self.source

    def axes(self) -> np.ndarray:
        return self.source.axes() if self.source is not None and not self.closed else np.zeros(4)

    def close(self) -> None:
        self.closed = True
        if self.source is not None:
            self.source.close()


def teleop_policy(source_factory: Callable[[], KeySource] = TerminalKeys, *, name: str = "cartesian teleop",
                  **options: Any) -> _TeleopFactory:
    """A ``PolicyFactory`` for ``record_demos(cfg, factory=teleop_policy(...))`` (``cfg.workers=1``: the operator's
    input lives in the recording process). source_factory: builds one ``KeySource`` per episode (a picklable
    callable: a class, a module-level function or a ``functools.partial`` of one); name: what the demo store's attrs
    say recorded it; options: ``CartesianTeleop`` keyword arguments."""
    return _TeleopFactory(source_factory, dict(options), name)
