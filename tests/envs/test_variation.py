"""Scene variation: specs and levels, seeded draws, what each factor changes (frames only, or physics), restoring the
scene as built."""

from __future__ import annotations

import numpy as np
import pytest

from envs import CubePickEnv, ScriptedExpert
from envs import variation as V
from envs.cube_pick import SCENE_STREAM
from envs.scene import gaussian_blur, jpeg

SIZE = 64  # frames big enough to show every factor, small enough for CI


@pytest.fixture(scope="module")
def env() -> CubePickEnv:
    env = CubePickEnv(cameras=("front",), image_size=SIZE, max_steps=60)
    yield env
    env.close()


def _frame(env: CubePickEnv, spec: str, seed: int = 3) -> tuple[np.ndarray, dict]:
    obs, info = env.reset(seed=seed, options={"cube_xy": (0.5, 0.05), "variation": spec})
    return obs["front"], info


def _expert_trace(env: CubePickEnv, spec: str, seed: int = 5, steps: int = 45) -> dict[str, np.ndarray]:
    """The scripted expert's episode under ``spec``: proprio, actions, cube positions and success per step."""
    obs, info = env.reset(seed=seed, options={"cube_xy": (0.55, -0.05), "variation": spec})
    expert = ScriptedExpert(env)
    trace: dict[str, list] = {"proprio": [], "action": [], "cube": [], "success": []}
    for _ in range(steps):
        a = expert.act(obs, info).executed
        obs, _, _, _, info = env.step(a)
        for k, v in (("proprio", obs["proprio"]), ("action", a), ("cube", info["cube_pos"]),
                     ("success", info["is_success"])):
            trace[k].append(np.copy(v))
    return {k: np.array(v) for k, v in trace.items()}


def test_spec_forms_parse_and_bad_ones_name_the_valid_list() -> None:
    """Presets, factor:level, groups and '+' joins parse; an unknown factor, level or preset is refused naming them."""
    assert V.parse("none") == () and V.is_none("none")
    assert [d.factor for d in V.parse("light_intensity:high")] == ["light_intensity"]
    assert {d.factor for d in V.parse("visual:low")} == set(V.VISUAL)
    assert {d.factor for d in V.parse("all:high")} == set(V.FACTORS)
    assert [d.factor for d in V.parse("camera_fov:low+cube_size:high")] == ["camera_fov", "cube_size"]
    std = V.parse("standard")
    assert {d.factor for d in std} == set(V.STANDARD_FACTORS) and all(d.prob < 1 and d.lo == 0 for d in std)
    with pytest.raises(ValueError, match=r"unknown variation factor 'lighting'.*light_intensity"):
        V.parse("lighting:high")
    with pytest.raises(ValueError, match=r"unknown level 'extreme'.*\['low', 'high'\]"):
        V.parse("light_intensity:extreme")
    with pytest.raises(ValueError, match=r"preset.*standard"):
        V.parse("fancy")
    with pytest.raises(ValueError, match="unknown reset option"):
        CubePickEnv(cameras=()).reset(seed=0, options={"varation": "none"})


def test_levels_cover_the_required_ranges() -> None:
    """Each factor's high level is stronger than its low one; intensity reaches 0.4–1.6×, the camera 2 cm and 3°."""
    for name, f in V.FACTORS.items():
        assert f.low[0] <= f.low[1] <= f.high[0] <= f.high[1] <= f.wide, name
    rng = np.random.default_rng(0)
    scales = [V.sample("light_intensity:high", rng, (0.5, 0.0))["light_intensity"]["scale"] for _ in range(200)]
    assert min(scales) == pytest.approx(0.4, abs=0.02) and max(scales) == pytest.approx(1.6, abs=0.02)
    cam = [V.sample("camera_pose:high", rng, (0.5, 0.0))["camera_pose"] for _ in range(200)]
    assert max(np.linalg.norm(c["offset_m"]) for c in cam) == pytest.approx(0.02, abs=1e-3)
    assert max(np.linalg.norm(c["rotation_deg"]) for c in cam) == pytest.approx(3.0, abs=0.1)
    kelvin = [V.sample("light_color:high", rng, (0.5, 0.0))["light_color"]["kelvin"] for _ in range(200)]
    assert min(kelvin) < 3500 and max(kelvin) > 10000  # warm to cool
    np.testing.assert_allclose(V.kelvin_rgb(V.NEUTRAL_KELVIN), 1.0)


def test_seeded_variation_is_reproducible(env: CubePickEnv) -> None:
    """The same seed and spec give the same scene parameters and the same pixels; another seed another scene."""
    a, info_a = _frame(env, "visual:high", seed=7)
    _frame(env, "standard", seed=1)  # something else in between
    b, info_b = _frame(env, "visual:high", seed=7)
    c, info_c = _frame(env, "visual:high", seed=8)
    assert info_a["variation"] == info_b["variation"] != info_c["variation"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_scene_index_draws_another_scene_of_the_same_episode(env: CubePickEnv) -> None:
    """scene_index 0 is the scene every env draws for a seed; k ≥ 1 another scene, reproducibly, of the same episode
    (cube, arm noise: the same expert episode); a negative or fractional index is refused."""
    first, info0 = _frame(env, "visual:high", seed=7)
    other = CubePickEnv(cameras=("front",), image_size=SIZE, max_steps=60, scene_index=1)
    try:
        a, info1 = _frame(other, "visual:high", seed=7)
        b, info1b = _frame(other, "visual:high", seed=7)
        obs, _ = other.reset(seed=7, options={"cube_xy": (0.5, 0.05)})
        clean, _ = _frame(env, "none", seed=7)
        np.testing.assert_array_equal(obs["front"], clean)  # without a variation the index changes nothing
        assert _expert_trace(other, "visual:high")["action"].tolist() == _expert_trace(env, "visual:high")[
            "action"].tolist()
    finally:
        other.close()
    assert info1["variation"] == info1b["variation"] != info0["variation"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, first)
    for bad in (-1, 0.5):
        with pytest.raises(ValueError, match="scene_index"):
            CubePickEnv(cameras=(), scene_index=bad)


def test_none_restores_the_scene_as_built(env: CubePickEnv) -> None:
    """After a varied episode, an episode without variation renders exactly as before any variation."""
    clean, info = _frame(env, "none")
    assert info["variation"] == {}
    _frame(env, "all:high")
    again, _ = _frame(env, "none")
    np.testing.assert_array_equal(clean, again)
    m = env.model
    slots = [m.geom(f"distractor{i}").id for i in range(V.MAX_DISTRACTORS)]
    assert np.all(m.geom_group[slots] == 5) and np.all(m.geom_contype[slots] == 0)  # hidden and never in contact


@pytest.mark.parametrize("factor", V.VISUAL)
def test_each_visual_factor_changes_the_frames_and_nothing_else(env: CubePickEnv, factor: str) -> None:
    """At its high level a visual factor changes what the camera sees; the expert's episode (proprio, actions, cube,
    success) is bit for bit the clean one."""
    clean, _ = _frame(env, "none")
    varied, info = _frame(env, f"{factor}:high")
    assert set(info["variation"]) == {factor}
    changed = np.abs(varied.astype(int) - clean.astype(int)).max(axis=-1) > 8  # (S, S) pixels visibly changed
    assert changed.mean() > 0.002, f"{factor} changed {changed.mean():.2%} of the pixels"
    a, b = _expert_trace(env, "none"), _expert_trace(env, f"{factor}:high")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{factor} changed {k}")
    assert a["success"].any()


def test_physical_factors_change_the_physics(env: CubePickEnv) -> None:
    """cube_size moves the cube's resting height with its size (the expert still picks it); cube_friction scales the
    friction of the cube and the pads, and changes the episode."""
    for scale_sign in (1, -1):
        seed = next(s for s in range(100) if np.sign(V.sample("cube_size:high", np.random.default_rng(
            [SCENE_STREAM, s]), (0.5, 0.0))["cube_size"]["scale"] - 1) == scale_sign)
        _, info = env.reset(seed=seed, options={"variation": "cube_size:high"})
        s = info["variation"]["cube_size"]["scale"]
        assert info["cube_pos"][2] == pytest.approx(0.02 * s) and info["lift_height"] == pytest.approx(0.0)
        assert env.model.geom("cube").size[0] == pytest.approx(0.02 * s)
    _, info = env.reset(seed=5, options={"variation": "cube_friction:high"})
    s = info["variation"]["cube_friction"]["scale"]
    assert env.model.geom("left_pad").friction[0] == pytest.approx(1.5 * s)
    assert env.model.geom("cube").friction[0] == pytest.approx(1.0 * s)
    a, b = _expert_trace(env, "none"), _expert_trace(env, "cube_size:high")
    assert not np.array_equal(a["cube"], b["cube"]) and b["success"].any()


def test_image_factors_are_what_they_say() -> None:
    """Blur keeps a flat image flat and smooths an edge; JPEG at high quality is close to the input."""
    flat = np.full((16, 16, 3), 100, np.uint8)
    np.testing.assert_array_equal(gaussian_blur(flat, 1.5), flat)
    edge = np.zeros((16, 16, 3), np.uint8)
    edge[:, 8:] = 200
    blurred = gaussian_blur(edge, 1.5)
    assert 0 < blurred[0, 7, 0] < 200 and blurred[0, 0, 0] == 0 and blurred[0, 15, 0] == 200
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert np.abs(jpeg(img, 95).astype(int) - img).mean() < np.abs(jpeg(img, 10).astype(int) - img).mean()


def test_distractors_keep_clear_of_the_cube() -> None:
    """Distractors stand ≥ 8 cm (plus their size) from the cube and never have the cube's colour."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        cube = rng.uniform((0.4, -0.2), (0.65, 0.2))
        objs = V.sample("distractors:high", rng, cube)["distractors"]["objects"]
        assert len(objs) == 3
        for o in objs:
            assert np.linalg.norm(np.asarray(o["xy"]) - cube) >= 0.08 + o["size"]
            assert not np.allclose(o["rgb"], V.CUBE_RGB, atol=0.1)


def test_conditions_list_every_factor_at_each_level() -> None:
    conds = V.conditions(("low", "high"), ("visual",))
    assert len(conds) == 2 * len(V.FACTORS) + 2 and conds[-1] == "visual:high"
    with pytest.raises(ValueError, match="unknown level"):
        V.conditions(("medium",))
