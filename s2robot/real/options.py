"""The arm env's options: what ``EnvConfig.options`` may hold for ``s2robot/FrankaReal-v0``, typed and checked when
the env config is built, so a misspelt key or a bad value fails there (naming the valid keys), not at the robot."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from s2robot.common.checks import check_keys
from s2robot.real.camera import SOURCE_FORMS
from s2robot.real.camera_timing import REALSENSE_FPS, REALSENSE_JITTER_MS, REALSENSE_LATENCY_MS, CameraTiming
from s2robot.real.rehearsal import LOOKS
from s2robot.real.safety import SafetyConfig

SIM_HOST = "franky-sim"  # the host that rehearses in franky-sim, in-process (= s2robot.sim.env.REHEARSAL_HOST, tested)


@dataclass
class ArmOptions:
    """``FrankaEnv``'s keyword arguments beyond ``EnvConfig``'s own fields, set as ``env.options.<name>``.

    host: the robot's FCI address, or ``franky-sim`` for the in-process rehearsal
    camera_sources: camera name → source (``realsense[:<serial>]``, ``opencv:<index or path>``, ``mujoco:<camera>``);
        None: the rehearsal's scene cameras (a real arm needs one per camera)
    safety: ``SafetyConfig`` fields (``env.options.safety.<field>``)
    home_q: start pose (7,) [rad]; None: the simulated env's
    render_size: (height, width) of rendered video frames [px]
    connect_timeout: longest wait for the robot's connect handshake [s]
    stall_timeout_s: a camera without a new frame for this long stops the episode [s] (the rehearsal's: of scene time)
    camera_fps, camera_latency_ms, camera_jitter_ms: the franky-sim rehearsal's camera timing (``real.camera_timing``):
        frames every 1/fps s of simulated time, each reaching the policy latency ± jitter (uniform, seeded) after its
        capture [Hz, ms, ms]; by default a RealSense D435 at 30 fps (50 ± 15 ms); latency and jitter 0: frames of
        the scene at the moment of the read. A real arm's cameras have their own (these are not used there)
    rehearsal_look: what the rehearsal's cameras see around the FR3 (``real.rehearsal.LOOKS``): ``franky-sim``, its
        own scene (blue checkered ground, its lights), or ``cube-pick``, the simulated env's table, floor and lights
        (physics unchanged), to tell what the look costs apart from the arm; franky-sim only
    """

    host: str = SIM_HOST
    camera_sources: dict[str, str] | None = None
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    home_q: list[float] | None = None
    render_size: tuple[int, int] = (480, 640)
    connect_timeout: float = 3.0
    stall_timeout_s: float = 1.0
    camera_fps: float = REALSENSE_FPS
    camera_latency_ms: float = REALSENSE_LATENCY_MS
    camera_jitter_ms: float = REALSENSE_JITTER_MS
    rehearsal_look: str = LOOKS[0]

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"env.options.host must be the robot's FCI address or 'franky-sim', got {self.host!r}")
        for name, source in (self.camera_sources or {}).items():
            scheme, _, rest = str(source).partition(":")
            if not (scheme == "realsense" or (scheme in ("opencv", "mujoco") and rest)):
                raise ValueError(f"env.options.camera_sources.{name}: unknown source {source!r}; accepted forms are "
                                 f"{SOURCE_FORMS}")
        if self.home_q is not None and (len(self.home_q) != 7 or not all(math.isfinite(v) for v in self.home_q)):
            raise ValueError(f"env.options.home_q must be 7 finite joint positions [rad], got {self.home_q}")
        if len(self.render_size) != 2 or not all(int(v) >= 8 for v in self.render_size):
            raise ValueError(f"env.options.render_size must be (height, width) ≥ 8 px, got {self.render_size}")
        for name in ("connect_timeout", "stall_timeout_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"env.options.{name} must be > 0 [s], got {getattr(self, name)}")
        if self.rehearsal_look not in LOOKS:
            raise ValueError(f"env.options.rehearsal_look must be one of {list(LOOKS)}, got {self.rehearsal_look!r}")
        if self.rehearsal_look != LOOKS[0] and self.host != SIM_HOST:
            raise ValueError(f"env.options.rehearsal_look={self.rehearsal_look!r} dresses the franky-sim rehearsal's "
                             f"scene; a real arm ({self.host}) has the scene in front of its cameras: leave it unset")
        try:
            CameraTiming(self.camera_fps, self.camera_latency_ms, self.camera_jitter_ms)
        except ValueError as err:
            raise ValueError(f"env.options.camera_fps/camera_latency_ms/camera_jitter_ms: {err}") from None

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> ArmOptions:
        """The options of ``env.options`` (a mapping); an unknown key, also one of ``safety``, is a ValueError naming
        the valid ones."""
        values = dict(options or {})
        check_keys(values, [f.name for f in fields(cls)], "env.options (of s2robot/FrankaReal-v0)")
        values["safety"] = SafetyConfig.from_options(values.get("safety"))
        return cls(**values)
