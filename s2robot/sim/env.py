"""Environment config and construction through the gymnasium API (s2robot never imports envs' internals)."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from typing import Any

import gymnasium as gym

from s2robot.common.checks import check_image_side, check_keys

CUBE_PICK_ENV_ID = "s2robot/CubePick-v0"  # the simulated cube-pick scene (envs.cube_pick; registered by envs)
ARM_ENV_ID = "s2robot/FrankaReal-v0"  # the Franka arm through franky (registered by s2robot.real, its own layer)
# The only ids an EnvConfig may name. gymnasium.make reads "module:id" as "import module, then make id", so an id that
# comes from a file (a checkpoint's env.json) must not be passed on unless it is one of these.
ENV_IDS = (CUBE_PICK_ENV_ID, ARM_ENV_ID)
REHEARSAL_HOST = "franky-sim"  # the arm env's host that rehearses in franky-sim, in-process


@dataclass
class EnvConfig:
    """A gymnasium environment. Presets: ``ENV_PRESETS`` in ``s2robot.workflows.configs`` (hydra group ``env``).

    id: one of s2robot's gymnasium ids (``ENV_IDS``: ``s2robot/CubePick-v0``, ``s2robot/FrankaReal-v0``)
    cameras: cameras rendered into observations (policy inputs)
    image_size: side of the square camera images [px]
    max_steps: episode length limit [control steps] (10 Hz: 100 = 10 s)
    terminate_on_success: end an episode at its first success step
    joint_noise: half-width of the uniform noise on the home joint positions at reset [rad] (on the arm, a draw that
        puts the hand outside its workspace is drawn again, and a noise whose draws mostly do is refused here)
    action_mode: ``delta`` (joint-position deltas) or ``absolute`` (joint-position targets); demos record both,
        and evaluation sets the one its policy was trained on
    options: further keyword arguments of that env's constructor (``s2robot/FrankaReal-v0``: host, camera_sources,
        safety, home_q, ...; see ``s2robot.real.options.ArmOptions``; the simulated env: ``action_delay``, control
        steps its servos get each command late, as a Franka through franky does; none by default); checked here
    """

    id: str = CUBE_PICK_ENV_ID
    cameras: list[str] = field(default_factory=lambda: ["front"])
    image_size: int = 224
    max_steps: int = 100
    terminate_on_success: bool = True
    joint_noise: float = 0.0
    action_mode: str = "delta"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def one_robot(self) -> bool:
        """Whether this env drives one physical robot, so episodes must run one at a time in one process."""
        return self.id == ARM_ENV_ID and self.options.get("host", REHEARSAL_HOST) != REHEARSAL_HOST

    @property
    def robot_side(self) -> str | None:
        """What of the robot's side runs on this machine's cores beside the policy, needing a core of its own
        (``common.threads``): the rehearsal's franky-sim physics thread, a real arm's franky control loop, or None
        (the simulated env steps only between the policy's steps)."""
        if self.id != ARM_ENV_ID:
            return None
        return "franky's 1 kHz control loop" if self.one_robot else "franky-sim's physics"

    def __post_init__(self) -> None:
        check_env_id(self.id)
        check_image_side(self.image_size)
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be ≥ 1 [control steps], got {self.max_steps}")
        if not (self.joint_noise >= 0 and math.isfinite(self.joint_noise)):
            raise ValueError(f"joint_noise must be a finite value ≥ 0 [rad], got {self.joint_noise}")
        check_env_options(self)


def check_env_options(cfg: EnvConfig) -> None:
    """Let the env of ``cfg.id`` check ``cfg.options`` and ``cfg.joint_noise`` as the config is built: with its class's
    ``check_config(joint_noise, options)`` when it has one (the arm's: typed options, a bounded start noise), else
    the option names against its constructor's keywords that EnvConfig does not set itself (the simulated env's:
    ``action_delay``, ``render_size``), so a misspelt key fails here, naming the valid ones. The class is found
    through gymnasium's registry, as ``make_env`` makes it."""
    if cfg.id == CUBE_PICK_ENV_ID:
        import envs  # noqa: F401  (registers s2robot/CubePick-v0, as make_env does)
    spec = gym.registry.get(cfg.id)
    if spec is None or not isinstance(spec.entry_point, str):
        return
    env_class = gym.envs.registration.load_env_creator(spec.entry_point)
    check = getattr(env_class, "check_config", None)
    if check is not None:
        check(cfg.joint_noise, dict(cfg.options))
        return
    set_by_config = {f.name for f in fields(EnvConfig)} | {"self", "render_mode"}
    keywords = [n for n in inspect.signature(env_class.__init__).parameters if n not in set_by_config]
    check_keys(cfg.options, keywords, f"env.options (of {cfg.id})")


def check_env_id(env_id: str) -> str:
    """``env_id`` when it is one of s2robot's environments (``ENV_IDS``); otherwise a ValueError naming them."""
    if env_id not in ENV_IDS:
        raise ValueError(f"env id {env_id!r} is not one of s2robot's environments {list(ENV_IDS)}; set env.id (or the "
                         "id in a checkpoint's env.json) to one of them. Other ids are refused: gymnasium would "
                         "import the module named before a ':' in an id")
    return env_id


def check_variation(spec: str, env_id: str = CUBE_PICK_ENV_ID, visual: bool = False) -> str:
    """``spec`` when it names a scene variation (``envs.variation``: ``none``, ``standard``, ``<factor>:<level>``, …)
    that the env ``env_id`` can apply (and, with ``visual``, that changes only what the cameras see); otherwise a
    ValueError naming the valid forms."""
    from envs.variation import PHYSICAL, is_none, is_visual, parse

    parse(spec)  # raises with the valid presets, factors, groups and levels
    if visual and not is_visual(spec):
        raise ValueError(f"variation={spec!r} changes the physics ({list(PHYSICAL)}), so its episodes are not the "
                         "demos' own: use a visual one (standard_visual, visual:<level>, <visual factor>:<level>)")
    if env_id == ARM_ENV_ID and not is_none(spec):
        raise ValueError(f"variation={spec!r}: scene variation is drawn in simulation; on the arm the scene varies by "
                         "itself (lights, table, camera mount): use variation=none")
    return spec


def make_env(cfg: EnvConfig, render_mode: str | None = "rgb_array") -> gym.Env:
    """Build the environment of ``cfg`` (registering the simulated scene first; the arm's id is registered whenever
    s2robot is imported); only an id of ``ENV_IDS`` is made, even when ``cfg.id`` was changed after construction."""
    check_env_id(cfg.id)
    import envs  # noqa: F401  (registers s2robot/CubePick-v0)

    return gym.make(
        cfg.id,
        cameras=list(cfg.cameras),
        image_size=cfg.image_size,
        max_steps=cfg.max_steps,
        terminate_on_success=cfg.terminate_on_success,
        joint_noise=cfg.joint_noise,
        action_mode=cfg.action_mode,
        render_mode=render_mode,
        disable_env_checker=True,
        **cfg.options,
    )


class EvalEpisodeEnv(gym.Wrapper):
    """One slot of a (vector) evaluation: per-slot reset options and, optionally, video frames in ``info``.

    ``reset(options={"per_env": [opts_0, opts_1, ...]})`` hands this slot ``opts_<index>`` (e.g. its
    ``cube_xy``): a vector env passes one options dict to every sub-env. With ``video_size`` set, every
    ``reset``/``step`` puts the ``video`` camera frame (H, W, 3) uint8 in ``info["video_frame"]``.
    """

    def __init__(self, env: gym.Env, index: int, video_size: tuple[int, int] | None = None) -> None:
        super().__init__(env)
        self.index = index
        self.video_size = video_size

    def _with_video(self, info: dict) -> dict:
        if self.video_size is not None:
            info["video_frame"] = self.env.unwrapped._render("video", self.video_size)
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if options and "per_env" in options:
            options = options["per_env"][self.index]
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, self._with_video(info)

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._with_video(info)


def make_eval_env(cfg: EnvConfig, index: int, video_size: tuple[int, int] | None = None) -> gym.Env:
    """The env of ``cfg`` as evaluation slot ``index`` (see ``EvalEpisodeEnv``); picklable for workers."""
    return EvalEpisodeEnv(make_env(cfg, render_mode=None), index, video_size)
