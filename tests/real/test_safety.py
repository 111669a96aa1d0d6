"""Safety limits: config validation, action checks, the filter's step bound, joint limits, and the workspace box and
table for the whole hand; whole moves (reset) and start-pose noise."""

from __future__ import annotations

import numpy as np
import pytest

from s2robot.real.env import HOME_Q
from s2robot.real.kinematics import HAND_POINTS, fingertip_pose, hand_points
from s2robot.real.safety import (
    JOINT_LIMITS,
    LINK_RADIUS,
    SafetyConfig,
    SafetyError,
    SafetyFilter,
    check_action,
    check_start,
    sample_start,
)

HOME = np.asarray(HOME_Q)  # fingertip at x 0.307, y 0, z 0.487 [m]


def tip(q: np.ndarray) -> np.ndarray:
    return fingertip_pose(q)[:3, 3]


def hand(q: np.ndarray) -> np.ndarray:
    """The hand's checked points (14, 3) [m] at joints q."""
    return hand_points(fingertip_pose(q))


def inside(points: np.ndarray, box: list[float], tol: float = 1e-9) -> bool:
    low, high = np.asarray(box[0::2]), np.asarray(box[1::2])
    return bool(np.all(points >= low - tol) and np.all(points <= high + tol))


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
    ({"table_z": 0.02}, "safety.table_z"),  # above the box's floor: the hand could reach into the table
    ({"tool_points": [[0.07, 0.0]]}, "safety.tool_points"),
    ({"tool_points": [[0.0, 0.0, 0.9]]}, "safety.tool_points"),  # 0.9 m off the flange: a typo
    ({"max_tracking_error": 0.1}, "safety.max_tracking_error"),  # not above max_joint_step
])
def test_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    """Each invalid value is a ValueError whose message names the field."""
    with pytest.raises(ValueError, match=field):
        SafetyConfig(**kwargs)


def test_from_options_names_a_misspelt_field() -> None:
    """A misspelt field of ``env.options.safety`` is a ValueError naming it, its likely spelling and the valid ones."""
    with pytest.raises(ValueError, match=r"relative_dynamic_factor.*'relative_dynamics_factor'.*Valid keys"):
        SafetyConfig.from_options({"relative_dynamic_factor": 0.3})
    assert SafetyConfig.from_options({"home_speed": 0.2}).home_speed == 0.2
    assert SafetyConfig.from_options(None) == SafetyConfig()


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

def test_hand_points_surround_the_fingertip() -> None:
    """At home (hand pointing down) the checked points span the hand: the housing 21 cm wide and above the flange, the
    fingertips' lowest edge 9 mm below the fingertip centre."""
    points = hand(HOME)
    assert points.shape == (len(HAND_POINTS), 3)
    np.testing.assert_allclose(points[1], tip(HOME), atol=1e-12)  # "fingertip centre"
    assert np.ptp(points[:, 1]) == pytest.approx(0.208, abs=1e-6)
    assert tip(HOME)[2] - points[:, 2].min() == pytest.approx(0.1123 - 0.1034, abs=1e-6)


def test_small_step_passes_unchanged() -> None:
    """An in-bounds step smaller than max_joint_step is sent as requested and counts nothing."""
    f = SafetyFilter(SafetyConfig())
    target = HOME + np.linspace(-0.05, 0.05, 7)
    np.testing.assert_array_equal(f.apply(target, HOME), target)
    assert f.counts == {"step": 0, "joint_limit": 0, "workspace": 0}


def test_large_step_is_bounded_per_joint() -> None:
    """Each joint moves at most max_joint_step towards its target (others unchanged); counted once in 'step'."""
    f = SafetyFilter(SafetyConfig(max_joint_step=0.1))
    delta = np.array([0.5, 0.3, 0.05, 0.0, -0.02, 0.2, -1.0])
    out = f.apply(HOME + delta, HOME)
    np.testing.assert_allclose(out - HOME, [0.1, 0.1, 0.05, 0.0, -0.02, 0.1, -0.1], atol=1e-12)
    assert f.counts == {"step": 1, "joint_limit": 0, "workspace": 0}
    f.reset_counts()
    assert f.counts == {"step": 0, "joint_limit": 0, "workspace": 0}


def test_target_past_joint_limit_is_clipped() -> None:
    """A target past a joint limit stops at the limit shrunk by joint_margin, counted in 'joint_limit'."""
    cfg = SafetyConfig(joint_margin=0.05, max_joint_step=0.3, max_tracking_error=0.6)
    f = SafetyFilter(cfg)
    high6 = JOINT_LIMITS["fr3"][1][6]
    commanded = HOME.copy()
    commanded[6] = high6 - 0.1  # 0.05 inside the shrunk limit
    out = f.apply(commanded + np.r_[np.zeros(6), 0.25], commanded)
    assert out[6] == pytest.approx(high6 - 0.05, abs=1e-12)
    np.testing.assert_array_equal(out[:6], commanded[:6])
    assert f.counts["joint_limit"] == 1 and f.counts["step"] == 0


def test_step_leaving_workspace_is_shortened() -> None:
    """A step that would take the hand out of the box is shortened to stay inside, counted in 'workspace'."""
    box = [0.27, 0.80, -0.40, 0.40, 0.01, 0.70]  # home's hand (back edge at x 0.2755) is 5.5 mm inside x_min
    f = SafetyFilter(SafetyConfig(workspace=box))
    target = HOME + np.r_[0.0, -0.1, np.zeros(5)]  # shoulder back: x −15 mm
    assert not inside(hand(target), box)
    out = f.apply(target, HOME)
    assert inside(hand(out), box)
    assert hand(out)[:, 0].min() == pytest.approx(0.27, abs=1e-4)  # shortened to the box's edge, not to no motion
    fraction = (out - HOME)[1] / -0.1
    assert 0.1 < fraction < 0.8
    np.testing.assert_allclose(np.delete(out - HOME, 1), 0.0, atol=1e-12)  # along the same direction
    assert f.counts == {"step": 0, "joint_limit": 0, "workspace": 1}


def test_outside_box_step_back_is_allowed_and_further_out_is_not() -> None:
    """With the commanded hand already outside, a step back towards the box passes; one further out does not."""
    box = [0.30, 0.80, -0.40, 0.40, 0.01, 0.70]  # home's hand reaches 24.5 mm behind x_min
    f = SafetyFilter(SafetyConfig(workspace=box))
    back = HOME + np.r_[0.0, 0.1, np.zeros(5)]  # x +15 mm: closer, still outside
    assert not inside(hand(back), box)
    np.testing.assert_array_equal(f.apply(back, HOME), back)
    assert f.counts["workspace"] == 0
    out = f.apply(HOME + np.r_[0.0, -0.1, np.zeros(5)], HOME)
    assert f.violation(out) <= f.violation(HOME) + 1e-12
    assert f.counts["workspace"] == 1


def test_random_requests_always_safe() -> None:
    """Over random requests (from home, and a random walk): within limits, within the step bound, inside the box."""
    cfg = SafetyConfig()
    f = SafetyFilter(cfg)
    rng = np.random.default_rng(0)
    limits, box = cfg.joint_limits, cfg.workspace
    assert inside(hand(HOME), box)
    commanded = HOME.copy()
    for i in range(100):
        start = HOME if i < 50 else commanded  # 50 from home, then 50 along a walk
        target = start + rng.uniform(-1.5, 1.5, 7)
        out = f.apply(target, start)
        assert np.all(out >= limits[:, 0] - 1e-12) and np.all(out <= limits[:, 1] + 1e-12)
        assert np.all(np.abs(out - start) <= cfg.max_joint_step + 1e-12)
        assert f.violation(out) == 0 and inside(hand(out), box)
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


# --- the whole hand and the table ---------------------------------------------------------------------------------

def test_a_step_that_swings_the_hand_out_is_shortened_though_the_fingertip_stays_inside() -> None:
    """Turning the base 0.1 rad moves the fingertip 3 cm sideways (inside a ±12 cm box) but the hand's housing corner
    (10.4 cm off-axis) 3.3 cm, out of it: the step is shortened so the whole hand stays inside."""
    box = [0.25, 0.80, -0.12, 0.12, 0.005, 0.70]
    f = SafetyFilter(SafetyConfig(workspace=box))
    target = HOME + np.r_[0.1, np.zeros(6)]
    assert inside(tip(target), box) and not inside(hand(target), box)
    out = f.apply(target, HOME)
    assert inside(hand(out), box) and 0 < out[0] - HOME[0] < 0.1
    assert f.counts["workspace"] == 1


def test_tool_points_are_kept_inside_too() -> None:
    """A wrist camera's mount given in safety.tool_points (hand frame) is checked like the hand's own corners."""
    camera = [0.0, -0.2, 0.03]  # 20 cm to the side of the flange, beyond the housing (y ±0.104)
    box = [0.25, 0.80, -0.15, 0.15, 0.005, 0.70]
    assert SafetyFilter(SafetyConfig(workspace=box)).violation(HOME) == 0
    f = SafetyFilter(SafetyConfig(workspace=box, tool_points=[camera]))
    assert f.violation(HOME) == pytest.approx(0.05, abs=1e-6)
    assert "tool point [0.0, -0.2, 0.03]" in f.describe(HOME)


def test_the_table_keeps_the_elbow_and_wrist_up() -> None:
    """The elbow and wrist joints (at home 0.615 and 0.697 m up) must stay LINK_RADIUS above the table: a table at
    0.64 m puts the elbow 9.5 cm and the wrist 1.3 cm too low; at 0.40 m both are clear."""
    f = SafetyFilter(SafetyConfig(workspace=[0.25, 0.80, -0.40, 0.40, 0.40, 0.75], table_z=0.40))
    assert f.violation(HOME) == 0
    f = SafetyFilter(SafetyConfig(workspace=[0.25, 0.80, -0.40, 0.40, 0.64, 0.75], table_z=0.64))
    assert f.point_names[-4:] == ["joint 4", "joint 5", "joint 6", "joint 7"]
    np.testing.assert_allclose(f.outside(HOME)[-4:], 0.64 + LINK_RADIUS - np.array([0.615, 0.697, 0.697, 0.697]),
                               atol=1e-3)


# --- start poses and whole moves ----------------------------------------------------------------------------------

def test_start_draws_keep_the_hand_in_the_box() -> None:
    """At joint_noise 0.3 rad about half the raw draws put the hand outside the box; every start sample_start returns
    over 500 draws is inside the box and the limits, and within the noise of home."""
    f = SafetyFilter(SafetyConfig())
    rng = np.random.default_rng(0)
    assert f.share_inside(HOME, 0.3) < 0.6
    for _ in range(500):
        q = sample_start(HOME, 0.3, rng, f)
        assert f.violation(q) == 0 and f.within_limits(q) and np.abs(q - HOME).max() <= 0.3


def test_a_safe_first_draw_is_the_plain_uniform_draw() -> None:
    """When the first draw is safe, the start is exactly home + uniform(−noise, noise): seeds keep their starts."""
    f = SafetyFilter(SafetyConfig())
    for seed in range(5):
        expected = HOME + np.random.default_rng(seed).uniform(-0.02, 0.02, size=7)
        np.testing.assert_array_equal(sample_start(HOME, 0.02, np.random.default_rng(seed), f), expected)


def test_start_noise_is_bounded_at_config_time() -> None:
    """joint_noise 0.8 rad is refused naming it, the share of safe draws and the largest noise that would pass; that
    bound and the recipe's 0.02 rad pass."""
    cfg = SafetyConfig()
    check_start(HOME, 0.02, cfg)
    with pytest.raises(ValueError, match=r"joint_noise=0\.8 rad.*safety\.workspace.*use joint_noise ≤ \d\.\d+") as err:
        check_start(HOME, 0.8, cfg)
    bound = float(str(err.value).split("joint_noise ≤ ")[1].split(" ")[0])
    assert 0.05 < bound < 0.8
    check_start(HOME, bound, cfg)


def test_a_home_pose_whose_hand_leaves_the_box_is_refused() -> None:
    """A home whose fingertip is inside but whose hand housing is not is refused, naming the point."""
    box = [0.25, 0.80, -0.09, 0.09, 0.005, 0.70]  # the fingertips' ±6.6 cm fit, the housing's ±10.4 cm does not
    assert inside(tip(HOME), box)
    with pytest.raises(ValueError, match=r"home_q puts the hand housing corner .* outside safety\.workspace"):
        check_start(HOME, 0.0, SafetyConfig(workspace=box))


def test_a_move_whose_path_leaves_the_box_is_refused_before_moving() -> None:
    """Start and goal inside, the straight joint path between them outside (the base turning past the box's front
    wall): SafetyError naming the point; a move that stays inside passes."""
    f = SafetyFilter(SafetyConfig(workspace=[0.0, 0.30, -0.5, 0.5, 0.005, 0.70]))
    start, goal = HOME + np.r_[-1.0, np.zeros(6)], HOME + np.r_[1.0, np.zeros(6)]
    assert f.violation(start) == 0 and f.violation(goal) == 0 and f.violation(HOME) > 0.03
    with pytest.raises(SafetyError, match=r"the reset move .* refused before moving: .* hand housing corner"):
        f.check_move(start, goal, "the reset move")
    f.check_move(start, start + np.r_[np.zeros(6), 0.3])  # the hand turns about its own axis


def test_a_move_past_the_joint_limits_is_refused() -> None:
    """A goal outside the shrunk joint limits is refused whatever the path."""
    f = SafetyFilter(SafetyConfig())
    goal = HOME.copy()
    goal[6] = JOINT_LIMITS["fr3"][1][6]  # on the limit: inside the robot's, outside the margin
    with pytest.raises(SafetyError, match="joint limits"):
        f.check_move(HOME, goal)
