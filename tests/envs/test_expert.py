"""ScriptedExpert: IK helpers, bounded actions, success on eval positions, reproducible noise injection."""

import math

import numpy as np
import pytest

from envs import EVAL_POSITIONS, MAX_JOINT_DELTA, CubePickEnv, Phase, ScriptedExpert
from envs.expert import ExpertConfig, grasp_yaw, hand_rotation, limit_norm, paced, rotation_error


def _episode(env: CubePickEnv, expert: ScriptedExpert, cube_xy=None, seed: int = 0) -> dict:
    """Run one episode to success or truncation; returns labels, executed actions, steps and outcome."""
    obs, info = env.reset(seed=seed, options={"cube_xy": cube_xy})
    expert.reset()
    labels, executed = [], []
    for _ in range(env.max_steps):
        step = expert.act(obs, info)
        labels.append(step.label)
        executed.append(step.executed)
        obs, _, terminated, truncated, info = env.step(step.executed)
        if terminated or truncated:
            break
    return {"labels": np.array(labels), "executed": np.array(executed), "success": info["is_success"]}


@pytest.fixture
def env() -> CubePickEnv:
    return CubePickEnv(cameras=(), terminate_on_success=True)


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def test_grasp_yaw_uses_the_cube_symmetry() -> None:
    """The hand yaw is the cube yaw modulo π/2, folded into (-π/4, π/4]."""
    cases = [(0.0, 0.0), (0.3, 0.3), (-0.3, -0.3), (math.pi / 2, 0.0), (1.2, 1.2 - math.pi / 2)]
    for cube_yaw, expected in cases:
        assert grasp_yaw(_yaw_quat(cube_yaw)) == pytest.approx(expected, abs=1e-9)


def test_hand_rotation_points_down_and_rotation_error_is_axis_angle() -> None:
    """hand_rotation is a proper rotation with z down; a small rotation's error is its rotation vector."""
    r = hand_rotation(0.4)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r[:, 2], (0, 0, -1))
    np.testing.assert_allclose(rotation_error(r, r), 0, atol=1e-12)
    angle = 1e-3  # about world z
    rz = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    np.testing.assert_allclose(rotation_error(r, rz @ r), (0, 0, angle), atol=1e-9)
    np.testing.assert_allclose(limit_norm(np.array([3.0, 4.0]), 1.0), (0.6, 0.8))


@pytest.mark.parametrize("index", [0, 2, 7, 15])
def test_expert_picks_eval_positions_with_bounded_actions(env, index: int) -> None:
    """On eval positions (incl. far corners) the expert succeeds with actions inside the per-step bounds."""
    run = _episode(env, ScriptedExpert(env), EVAL_POSITIONS[index])
    assert run["success"]
    assert np.abs(run["labels"][:, :7]).max() <= MAX_JOINT_DELTA
    assert set(np.unique(run["labels"][:, 7])) == {0.0, 1.0}
    np.testing.assert_array_equal(run["labels"], run["executed"])  # no noise requested
    assert len(run["labels"]) < 50  # well within the 100-step episode


def test_expert_phases_run_in_order(env) -> None:
    """A clean pick visits approach → descend → close → lift, in that order."""
    obs, info = env.reset(seed=0, options={"cube_xy": (0.5, 0.0)})
    expert = ScriptedExpert(env)
    phases = []
    for _ in range(40):
        action = expert(obs, info)
        phases.append(expert.phase)
        obs, _, terminated, _, info = env.step(action)
        if terminated:
            break
    order = [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]]
    assert order == [Phase.APPROACH, Phase.DESCEND, Phase.CLOSE, Phase.LIFT]


def test_noise_injection_perturbs_execution_and_still_succeeds(env) -> None:
    """With noise the executed actions differ from the labels, labels stay clean, and the pick succeeds."""
    experts = [ScriptedExpert(env, noise_std=0.02, rng=np.random.default_rng(7)) for _ in range(2)]
    runs = [_episode(env, expert, (0.55, 0.1)) for expert in experts]
    for run in runs:
        assert run["success"]
        diff = run["executed"][:, :7] - run["labels"][:, :7]
        assert np.abs(diff).mean() > 0.005
        assert np.abs(run["executed"][:, :7]).max() <= MAX_JOINT_DELTA
        np.testing.assert_array_equal(run["executed"][:, 7], run["labels"][:, 7])
    np.testing.assert_array_equal(runs[0]["executed"], runs[1]["executed"])  # same rng seed, same demo


def test_expert_rejects_bad_arguments(env) -> None:
    """Noise without an rng, negative noise, and non-CubePick envs are refused."""
    with pytest.raises(ValueError, match="rng"):
        ScriptedExpert(env, noise_std=0.01)
    with pytest.raises(ValueError, match="noise_std"):
        ScriptedExpert(env, noise_std=-1.0, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="CubePickEnv"):
        ScriptedExpert(object())  # type: ignore[arg-type]


def test_expert_success_rate_over_random_positions_and_all_eval_positions(env) -> None:
    """≥ 98% over 100 random cube positions and 16/16 on EVAL_POSITIONS."""
    expert = ScriptedExpert(env)
    random_ok = [_episode(env, expert, seed=s)["success"] for s in range(100)]
    assert np.mean(random_ok) >= 0.98
    assert all(_episode(env, expert, xy)["success"] for xy in EVAL_POSITIONS)


def test_paced_scales_the_speeds_only() -> None:
    base = ExpertConfig()
    slow = paced(base, 0.5)
    speeds = ("approach_speed", "descend_speed", "lift_speed", "rotation_speed")
    assert all(math.isclose(getattr(slow, k), 0.5 * getattr(base, k)) for k in speeds)
    assert slow.close_steps == base.close_steps and slow.lift_height == base.lift_height and paced(base, 1.0) == base
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="pace must be a finite number > 0"):
            paced(base, bad)
