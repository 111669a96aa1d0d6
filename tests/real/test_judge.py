"""Judges: the operator's prompts and answers (scripted), and the unknown cube state on a real arm."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from envs.cube_pick import LIFT_SUCCESS_HEIGHT
from s2robot.real.judge import OperatorJudge


def scripted(answers: list[str]) -> tuple[Callable[[str], str], list[str]]:
    """An ``ask`` that returns ``answers`` in order and records the prompts it was given."""
    prompts: list[str] = []
    it = iter(answers)

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return next(it)

    return ask, prompts


def test_place_prompts_mark_and_position_in_cm() -> None:
    """place asks once, naming the mark's label and its position in cm."""
    ask, prompts = scripted([""])
    OperatorJudge(ask).place((0.5, -0.125), "7")
    assert len(prompts) == 1
    assert "mark 7" in prompts[0]
    assert "x 50.0 cm" in prompts[0] and "y -12.5 cm" in prompts[0]


def test_place_without_label() -> None:
    """Without a label the prompt has the position and no mark."""
    ask, prompts = scripted([""])
    OperatorJudge(ask).place((0.45, 0.1), None)
    assert "mark" not in prompts[0]
    assert "x 45.0 cm" in prompts[0] and "y 10.0 cm" in prompts[0]


@pytest.mark.parametrize(("answer", "expected"), [("y", True), ("yes", True), (" Y ", True), ("YES", True),
                                                  ("n", False), ("no", False), ("No\n", False)])
def test_final_maps_answers(answer: str, expected: bool) -> None:
    """y/yes and n/no (any case, surrounding blanks) map to True/False, whatever the per-step check saw."""
    ask, prompts = scripted([answer])
    assert OperatorJudge(ask).final(not expected) is expected
    assert len(prompts) == 1 and "[y/n]" in prompts[0]


def test_final_reasks_on_garbage() -> None:
    """Anything else is asked again until the answer is one of y/yes/n/no."""
    ask, prompts = scripted(["maybe", "", "yep", "n"])
    assert OperatorJudge(ask).final(True) is False
    assert len(prompts) == 4


def test_state_is_the_placement() -> None:
    """An operator cell measures nothing: the cube is where it was placed (resting), orientation NaN, nothing
    grasped; NaN before any placement; fresh arrays."""
    judge = OperatorJudge(scripted([""])[0])
    assert np.isnan(judge.state()[0]).all()
    judge.place((0.5, -0.1), "3")
    pos, quat, grasped = judge.state()
    assert pos.shape == (3,) and quat.shape == (4,)
    np.testing.assert_allclose(pos, [0.5, -0.1, 0.02])
    assert np.isnan(quat).all() and grasped is False
    pos[:] = 0.0
    np.testing.assert_allclose(judge.state()[0], [0.5, -0.1, 0.02])


def test_final_asks_for_the_simulated_success() -> None:
    """The question is the simulated env's success: lifted ≥ 5 cm while held in the closed hand at any moment (a cube
    dropped afterwards still counts), never "held at the end"."""
    ask, prompts = scripted(["y"])
    OperatorJudge(ask).final(False)
    question = prompts[0]
    assert f"≥ {100 * LIFT_SUCCESS_HEIGHT:.0f} cm" in question
    assert "at any moment" in question and "held" in question and "closed" in question
    assert "at the end" not in question
