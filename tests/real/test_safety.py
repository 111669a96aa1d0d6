"""Safety limits: config validation, action checks, and the filter's step bound, joint limits and workspace box."""

from __future__ import annotations

import numpy as np
import pytest

from s2robot.real.env import HOME_Q
from s2robot.real.kinematics import fingertip_pose
from s2robot.real.safety import JOINT_LIMITS, SafetyConfig, SafetyFilter, box_violation, check_action

HOME = np.asarray(HOME_Q)  # fingertip at x 0.307, y 0, z 0.487 [m]


def tip(q: np.ndarray) -> np.ndarray:
    return fingertip_pose(q)[:3, 3]


def inside(point: np.ndarray, box: list[float], tol: float = 1e-9) -> bool:
    low, high = np.asarray(box[0::2]), np.asarray(box[1::2])
    return bool(np.all(point >= low - tol) and np.all(point <= high + tol))


# --- SafetyConfig ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"robot": "ur5"}, "safety.robot"),
    ({"workspace": [0.8, 0.25, -0.4, 0.4, 0.01, 0.65]}, "safety.workspace"),  # x_min > x_max
    ({"workspace": [0.25, 0.8, -0.4, 0.4, 0.01]}, "safety.workspace"),  # 5 values
    ({"workspace": [0.25, 0.8, -0.4, float("nan"), 0.01, 0.65]}, "safety.workspace"),
    ({"relative_dynamics_factor": 0.0}, "safety.relative_dynamics_factor"),
    ({"relative_dynamics_factor": 1.5}, "safety.relative_dynamics_factor"),
    ({"home_speed": -0.1}, "safety.home_speed"),
    ({"max_joint_step": 0.0}, "safety.max_joint_step"),
    ({"joint_margin": 0.5}, "safety.joint_margin"),
    ({"grasp_force": 0.0}, "safety.grasp_force"),
])
def test_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    """Each invalid value is a ValueError whose message names the field."""
    with pytest.raises(ValueError, match=field):
        SafetyConfig(**kwargs)


def test_config_accepts_factor_one_and_panda() -> None:
    """A factor of exactly 1 is allowed; the panda's limits are selected and shrunk by the margin."""
    cfg = SafetyConfig(robot="panda", relative_dynamics_factor=1.0, home_speed=1.0, joint_margin=0.1)
    low, high = (np.asarray(v) for v in JOINT_LIMITS["panda"])
    np.testing.assert_allclose(cfg.joint_limits, np.stack([low + 0.1, high - 0.1], axis=1))


# --- check_action -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action", [np.zeros(7), np.zeros((1, 8)), np.zeros(9)])
def test_check_action_wrong_shape(action: np.ndarray) -> None:
    """A wrong shape is refused with a message saying the arm is stopped."""
    with pytest.raises(ValueError, match=r"shape.*stopped"):
        check_action(action)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_action_non_finite(bad: float) -> None:
    """NaN and ±inf are refused, naming the index and saying the arm is stopped."""
    action = np.zeros(8)
    action[3] = bad
    with pytest.raises(ValueError, match=r"\[3\].*stopped"):
        check_action(action)


def test_check_action_passes_finite_as_float64() -> None:
    """A finite (8,) action comes back as float64 with the same values."""
    a = np.arange(8, dtype=np.float32) / 10
    out = check_action(a)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, a.astype(np.float64))


# --- SafetyFilter -------------------------------------------------------------------------------------------------

def test_small_step_passes_unchanged() -> None:
    """An in-bounds step smaller than max_joint_step is sent as requested and counts nothing."""
    f = SafetyFilter(SafetyConfig())
    target = HOME + np.linspace(-0.05, 0.05, 7)
    np.testing.assert_array_equal(f.apply(target, HOME), target)
    assert f.counts == {"step": 0, "joint_limit": 0, "workspace": 0}


def test_large_step_is_bounded_per_joint() -> None:
    """Each joint moves at most max_joint_step towards its target (others unchanged); counted once in 'step'."""
    f = SafetyFilter(SafetyConfig(max_joint_step=0.1))
    delta = np.array([0.5, -0.3, 0.05, 0.0, -0.02, 0.2, -1.0])
    out = f.apply(HOME + delta, HOME)
    np.testing.assert_allclose(out - HOME, [0.1, -0.1, 0.05, 0.0, -0.02, 0.1, -0.1], atol=1e-12)
    assert f.counts == {"step": 1, "joint_limit": 0, "workspace": 0}
    f.reset_counts()
    assert f.counts == {"step": 0, "joint_limit": 0, "workspace": 0}


def test_target_past_joint_limit_is_clipped() -> None:
    """A target past a joint limit stops at the limit shrunk by joint_margin, counted in 'joint_limit'."""
    cfg = SafetyConfig(joint_margin=0.05, max_joint_step=0.3)
    f = SafetyFilter(cfg)
    high6 = JOINT_LIMITS["fr3"][1][6]
    commanded = HOME.copy()
    commanded[6] = high6 - 0.1  # 0.05 inside the shrunk limit
    out = f.apply(commanded + np.r_[np.zeros(6), 0.25], commanded)
    assert out[6] == pytest.approx(high6 - 0.05, abs=1e-12)
    np.testing.assert_array_equal(out[:6], commanded[:6])
    assert f.counts["joint_limit"] == 1 and f.counts["step"] == 0


def test_step_leaving_workspace_is_shortened() -> None:
    """A step that would take the fingertip out of the box is shortened to stay inside, counted in 'workspace'."""
    box = [0.30, 0.80, -0.40, 0.40, 0.01, 0.65]  # home's fingertip (x 0.307) is 7 mm inside x_min
    f = SafetyFilter(SafetyConfig(workspace=box))
    target = HOME + np.r_[0.0, -0.1, np.zeros(5)]  # shoulder back: x −15 mm
    assert not inside(tip(target), box)
    out = f.apply(target, HOME)
    assert inside(tip(out), box)
    assert tip(out)[0] == pytest.approx(0.30, abs=1e-4)  # shortened to the box's edge, not to no motion
    fraction = (out - HOME)[1] / -0.1
    assert 0.2 < fraction < 0.8
    np.testing.assert_allclose(np.delete(out - HOME, 1), 0.0, atol=1e-12)  # along the same direction
    assert f.counts == {"step": 0, "joint_limit": 0, "workspace": 1}


def test_outside_box_step_back_is_allowed_and_further_out_is_not() -> None:
    """With the commanded fingertip already outside, a step back towards the box passes; one further out does not."""
    box = [0.33, 0.80, -0.40, 0.40, 0.01, 0.65]  # home's fingertip is 23 mm outside x_min
    f = SafetyFilter(SafetyConfig(workspace=box))
    back = HOME + np.r_[0.0, 0.1, np.zeros(5)]  # x +15 mm: closer, still outside
    assert not inside(tip(back), box)
    np.testing.assert_array_equal(f.apply(back, HOME), back)
    assert f.counts["workspace"] == 0
    out = f.apply(HOME + np.r_[0.0, -0.1, np.zeros(5)], HOME)
    assert box_violation(tip(out), np.asarray(box)) <= box_violation(tip(HOME), np.asarray(box)) + 1e-12
    assert f.counts["workspace"] == 1


def test_random_requests_always_safe() -> None:
    """Over random requests (from home, and a random walk): within limits, within the step bound, inside the box."""
    cfg = SafetyConfig()
    f = SafetyFilter(cfg)
    rng = np.random.default_rng(0)
    limits, box = cfg.joint_limits, cfg.workspace
    assert inside(tip(HOME), box)
    commanded = HOME.copy()
    for i in range(100):
        start = HOME if i < 50 else commanded  # 50 from home, then 50 along a walk
        target = start + rng.uniform(-1.5, 1.5, 7)
        out = f.apply(target, start)
        assert np.all(out >= limits[:, 0] - 1e-12) and np.all(out <= limits[:, 1] + 1e-12)
        assert np.all(np.abs(out - start) <= cfg.max_joint_step + 1e-12)
        assert inside(tip(out), box)
        commanded = out
    assert f.counts["step"] == 100  # every request was larger than one step
    assert f.counts["workspace"] > 0


def test_float32_step_at_bound_is_not_an_intervention() -> None:
    """A float32 request of exactly max_joint_step (0.1 → 0.10000000149) is sent at the bound and not counted."""
    f = SafetyFilter(SafetyConfig(max_joint_step=0.1))
    delta = np.r_[0.0, 0.1, 0.0, -0.1, 0.0, 0.0, 0.0].astype(np.float32).astype(np.float64)
    out = f.apply(HOME + delta, HOME)
    np.testing.assert_allclose(out - HOME, delta, atol=1e-8)
    assert f.counts == {"step": 0, "joint_limit": 0, "workspace": 0}
