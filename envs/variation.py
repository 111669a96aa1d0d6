"""Scene variation: named factors at named levels, drawn per episode from a seed (pure numpy, no MuJoCo).

A *spec* string says what varies:

- ``none``: the scene as built (the paper setting);
- ``standard``: the randomisation preset for robust policies (every visual factor and the cube size, each on in
  about half the episodes, at a magnitude drawn anywhere from nothing to beyond its ``high`` level);
- ``standard_visual``: the same without the cube size: only what the cameras see changes, so every episode is the
  one of the same seed in the scene as built (what pairs of renderings for pretraining need);
- ``<factor>:<level>``: one factor at one level (``FACTORS``, ``LEVELS``), e.g. ``light_intensity:high``;
- ``visual:<level>`` / ``physical:<level>`` / ``all:<level>``: every factor of that kind at once;
- several of these joined by ``+``: ``light_intensity:high+camera_pose:low``.

A level is a range of one magnitude per factor (a scale, an angle, a distance, a count); each episode draws the
magnitude from the range and a direction at random (brighter or darker, warmer or cooler, which way the camera
moves), so a level is a severity, not one fixed scene. ``sample`` turns a spec and a random generator into the
episode's *parameters*: a JSON-able ``{factor: {name: value}}`` that says exactly what was changed (recorded in
each episode's info). Applying them to a model is ``envs.scene``'s job; visual factors change only what the
cameras see, physical ones (``cube_size``, ``cube_friction``) the physics.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from envs.positions import WORKSPACE

LEVELS = ("low", "high")
PRESETS = ("none", "standard", "standard_visual")
GROUPS = ("visual", "physical", "all")
NEUTRAL_KELVIN = 6500.0  # the scene's lights are white: colour temperature 6500 K
TABLE_TEXTURES = ("plain", "grain", "checker", "grid")  # table materials in the MJCF: table, table_<texture>
DISTRACTOR_SHAPES = ("sphere", "cylinder", "capsule", "ellipsoid")
MAX_DISTRACTORS = 3  # distractor slots in the MJCF
CUBE_RGB = (0.85, 0.15, 0.12)  # the cube material's colour in the MJCF
TABLE_RGB = (1.0, 1.0, 1.0)  # the table material's tint of its texture in the MJCF
FLOOR_RGB = (1.0, 1.0, 1.0)
Params = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Factor:
    """One way the scene varies.

    kind: ``visual`` (only what the cameras see) or ``physical``
    magnitude: what a level's range measures, with its unit
    low, high: each level's (min, max) magnitude
    wide: the ``standard`` preset draws magnitudes in [0, wide] (wide ≥ high's max: robust past the tested level)
    """

    kind: str
    magnitude: str
    low: tuple[float, float]
    high: tuple[float, float]
    wide: float

    def level(self, name: str) -> tuple[float, float]:
        return self.low if name == "low" else self.high


FACTORS: dict[str, Factor] = {
    "light_intensity": Factor("visual", "|scale - 1| of every light", (0.15, 0.25), (0.4, 0.6), 0.65),
    "light_direction": Factor("visual", "rotation of the lights about the vertical [deg]", (15, 25), (40, 60), 70),
    "light_color": Factor("visual", "colour temperature from 6500 K: 0 none, 1 = 2500 K (warm) or 20000 K (cool)",
                          (0.25, 0.4), (0.7, 0.9), 1.0),
    "cube_color": Factor("visual", "hue rotation of the cube [deg]", (25, 45), (90, 180), 180),
    "table_color": Factor("visual", "blend from the table's colour to a random one (1 = all random); textured with "
                          "this probability", (0.15, 0.3), (0.55, 0.8), 0.9),
    "background_color": Factor("visual", "blend from the floor's colour to a random one", (0.2, 0.35), (0.6, 0.9), 1.0),
    "camera_pose": Factor("visual", "camera displacement [cm] (and 1.5° of rotation per cm)", (0.5, 1.0), (1.5, 2.0),
                          2.4),
    "camera_fov": Factor("visual", "|change| of the vertical field of view [deg]", (2.0, 3.5), (5.0, 7.0), 8.0),
    "distractors": Factor("visual", "objects of other shapes and colours on the table", (1, 1), (3, 3), 3),
    "image_noise": Factor("visual", "Gaussian pixel noise std [of 255]", (2.0, 4.0), (6.0, 10.0), 12.0),
    "image_blur": Factor("visual", "Gaussian blur std [px]", (0.5, 0.8), (1.2, 1.8), 2.0),
    "image_jpeg": Factor("visual", "100 - JPEG quality", (30, 50), (80, 90), 92),
    "cube_size": Factor("physical", "|scale - 1| of the cube's edge", (0.08, 0.12), (0.18, 0.25), 0.25),
    "cube_friction": Factor("physical", "|log scale| of the friction of the cube and the finger pads", (0.25, 0.4),
                            (0.7, 0.9), 0.9),
}
VISUAL = tuple(k for k, f in FACTORS.items() if f.kind == "visual")
PHYSICAL = tuple(k for k, f in FACTORS.items() if f.kind == "physical")
STANDARD_FACTORS = (*VISUAL, "cube_size")  # friction changes nothing a policy sees
STANDARD_PROB = 0.5  # chance that each of STANDARD_FACTORS is on in an episode of the ``standard`` preset


@dataclass(frozen=True)
class Draw:
    """Factor ``factor`` is on with probability ``prob``, at a magnitude uniform in [lo, hi]."""

    factor: str
    lo: float
    hi: float
    prob: float = 1.0


def valid_specs() -> list[str]:
    """Every accepted spec form, for error messages."""
    return [*PRESETS, *(f"{g}:<level>" for g in GROUPS), *(f"{f}:<level>" for f in FACTORS)]


@cache
def parse(spec: str) -> tuple[Draw, ...]:
    """The draws of ``spec`` (see the module docstring); a bad factor, level or preset is a ValueError naming the
    valid ones."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"variation must be a non-empty string such as 'none', got {spec!r}")
    draws: dict[str, Draw] = {}
    for part in spec.strip().split("+"):
        part = part.strip()
        if part == "none":
            continue
        if part in ("standard", "standard_visual"):
            for f in STANDARD_FACTORS if part == "standard" else VISUAL:
                draws[f] = Draw(f, 0.0, FACTORS[f].wide, STANDARD_PROB)
            continue
        name, sep, level = part.partition(":")
        if not sep:
            raise ValueError(f"unknown variation {part!r}: a preset {list(PRESETS)} or '<factor>:<level>' with a "
                             f"level in {list(LEVELS)}; factors: {list(FACTORS)}; groups: {list(GROUPS)}")
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r} in variation {part!r}; levels: {list(LEVELS)}")
        if name in GROUPS:
            names = {"visual": VISUAL, "physical": PHYSICAL, "all": tuple(FACTORS)}[name]
        elif name in FACTORS:
            names = (name,)
        else:
            raise ValueError(f"unknown variation factor {name!r}; factors: {list(FACTORS)}; groups: {list(GROUPS)}; "
                             f"presets: {list(PRESETS)}")
        for f in names:
            draws[f] = Draw(f, *FACTORS[f].level(level))
    return tuple(draws[f] for f in FACTORS if f in draws)  # one draw per factor, in FACTORS order


def is_none(spec: str) -> bool:
    """Whether ``spec`` varies nothing."""
    return not parse(spec)


def is_visual(spec: str) -> bool:
    """Whether ``spec`` varies only what the cameras see (every episode stays the one of its seed as built)."""
    return all(FACTORS[d.factor].kind == "visual" for d in parse(spec))


def sample(spec: str, rng: np.random.Generator, cube_xy: tuple[float, float] | np.ndarray) -> Params:
    """One episode's parameters of ``spec``: ``{factor: {...}}`` for the factors that are on.

    rng: the episode's variation stream (draws in FACTORS order: the same seed gives the same scene);
    cube_xy: where the cube is [m] (distractors keep clear of it and go on the table around the workspace).
    """
    workspace = (WORKSPACE.x_min, WORKSPACE.x_max, WORKSPACE.y_min, WORKSPACE.y_max)
    params: Params = {}
    for d in parse(spec):
        on = rng.random() < d.prob  # always drawn, so one factor's draws never shift another's
        m = float(rng.uniform(d.lo, d.hi))
        sub = np.random.default_rng(rng.integers(2**63))  # the factor's own draws
        if on:
            params[d.factor] = _SAMPLERS[d.factor](m, sub, np.asarray(cube_xy, float), workspace)
    return params


# ------------------------------------------------------------------------------------------- samplers
def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def kelvin_rgb(kelvin: float) -> np.ndarray:
    """Relative RGB (3,) of a blackbody at ``kelvin`` [K], scaled so 6500 K is (1, 1, 1) and the luma (Rec. 601
    weights) stays 1: a light's colour changes, not its brightness. Tanner Helland's fit of the Planckian locus."""

    def raw(k: float) -> np.ndarray:
        t = k / 100.0
        r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
        g = 99.4708025861 * math.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
        b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307)
        return np.clip([r, g, b], 0.0, 255.0) / 255.0

    rgb = raw(kelvin) / raw(NEUTRAL_KELVIN)
    return rgb / float(np.dot([0.299, 0.587, 0.114], rgb))


def _light_intensity(m: float, rng: np.random.Generator, *_: Any) -> dict[str, Any]:
    return {"scale": 1.0 + _sign(rng) * m}


def _light_direction(m: float, rng: np.random.Generator, *_: Any) -> dict[str, Any]:
    return {"azimuth_deg": _sign(rng) * m, "elevation_deg": float(rng.uniform(-m, m) / 4)}


def _light_color(m: float, rng: np.random.Generator, *_: Any) -> dict[str, Any]:
    # in mireds (1e6 / K), where equal steps look about equally different: 6500 K ≈ 154; 2500 K = 400; 20000 K = 50
    neutral = 1e6 / NEUTRAL_KELVIN
    mired = neutral + m * ((400.0 - neutral) if rng.random() < 0.5 else (50.0 - neutral))
    kelvin = 1e6 / mired
    return {"kelvin": kelvin, "rgb": kelvin_rgb(kelvin).tolist()}


def _cube_color(m: float, rng: np.random.Generator, *_: Any) -> dict[str, Any]:
    h, s, v = colorsys.rgb_to_hsv(*CUBE_RGB)
    h = (h + _sign(rng) * m / 360.0) % 1.0
    s = float(np.clip(s * rng.uniform(0.8, 1.05), 0.0, 1.0))
    v = float(np.clip(v * rng.uniform(0.8, 1.1), 0.0, 1.0))
    return {"rgb": list(colorsys.hsv_to_rgb(h, s, v))}


def _blend_color(base: tuple[float, ...], m: float, rng: np.random.Generator) -> list[float]:
    target = rng.uniform(0.1, 1.0, 3)
    return ((1 - m) * np.asarray(base) + m * target).tolist()


def _table_color(m: float, rng: np.random.Generator, *_: Any) -> dict[str, Any]:
    rgb = _blend_color(TABLE_RGB, m, rng)
    texture = str(rng.choice(TABLE_TEXTURES[1:])) if rng.random() < m else "plain"
    return {"rgb": rgb, "texture": texture}


def _background_color(m: float, rng: np.random.Generator, *_: Any) -> dict[str, Any]:
    return {"rgb": _blend_color(FLOOR_RGB, m, rng)}


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _camera_pose(m: float, rng: np.random.Generator, *_: Any) -> dict[str, Any]:
    return {"offset_m": (_unit(rng) * m / 100).tolist(), "rotation_deg": (_unit(rng) * 1.5 * m).tolist()}


def _camera_fov(m: float, rng: np.random.Generator, *_: Any) -> dict[str, Any]:
    return {"fovy_delta_deg": _sign(rng) * m}


def _distractors(m: float, rng: np.random.Generator, cube_xy: np.ndarray,
                 workspace: tuple[float, float, float, float]) -> dict[str, Any]:
    """``round(m)`` objects on the table, each ≥ 8 cm (plus its size) from the cube and 6 cm from the others."""
    n = min(MAX_DISTRACTORS, round(m))
    cube_hue = colorsys.rgb_to_hsv(*CUBE_RGB)[0]
    x0, x1, y0, y1 = workspace
    objects: list[dict[str, Any]] = []
    for _ in range(200):  # rejection sampling; the workspace leaves room for 3 with these gaps
        if len(objects) == n:
            break
        size = float(rng.uniform(0.015, 0.03))
        xy = rng.uniform((x0 - 0.05, y0 - 0.08), (x1 + 0.05, y1 + 0.08))
        if np.linalg.norm(xy - cube_xy) < 0.08 + size or any(
                np.linalg.norm(xy - np.asarray(o["xy"])) < 0.06 + size + o["size"] for o in objects):
            continue
        hue = (cube_hue + rng.uniform(60, 300) / 360.0) % 1.0  # never the cube's red
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.4, 1.0), rng.uniform(0.35, 0.95))
        objects.append({"shape": str(rng.choice(DISTRACTOR_SHAPES)), "size": size, "xy": xy.tolist(),
                        "yaw": float(rng.uniform(0, math.pi)), "rgb": list(rgb)})
    return {"objects": objects}


def _image_noise(m: float, *_: Any) -> dict[str, Any]:
    return {"sigma": m}


def _image_blur(m: float, *_: Any) -> dict[str, Any]:
    return {"sigma_px": m}


def _image_jpeg(m: float, *_: Any) -> dict[str, Any]:
    return {"quality": max(1, round(100 - m))}


def _cube_size(m: float, rng: np.random.Generator, *_: Any) -> dict[str, Any]:
    return {"scale": 1.0 + _sign(rng) * m}


def _cube_friction(m: float, rng: np.random.Generator, *_: Any) -> dict[str, Any]:
    return {"scale": math.exp(_sign(rng) * m)}


_SAMPLERS = {
    "light_intensity": _light_intensity, "light_direction": _light_direction, "light_color": _light_color,
    "cube_color": _cube_color, "table_color": _table_color, "background_color": _background_color,
    "camera_pose": _camera_pose, "camera_fov": _camera_fov, "distractors": _distractors,
    "image_noise": _image_noise, "image_blur": _image_blur, "image_jpeg": _image_jpeg,
    "cube_size": _cube_size, "cube_friction": _cube_friction,
}
assert set(_SAMPLERS) == set(FACTORS)


def conditions(levels: tuple[str, ...] | list[str] = LEVELS, groups: tuple[str, ...] | list[str] = ("visual",)
               ) -> list[str]:
    """The perturbation suite's specs: every factor at each level, then each group at each level."""
    for level in levels:
        if level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; levels: {list(LEVELS)}")
    for g in groups:
        if g not in GROUPS:
            raise ValueError(f"unknown factor group {g!r}; groups: {list(GROUPS)}")
    return [f"{f}:{lv}" for f in FACTORS for lv in levels] + [f"{g}:{lv}" for g in groups for lv in levels]
