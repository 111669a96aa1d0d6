"""Teleoperation end to end in franky-sim: a scripted operator's keys record demos that lift the cube."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("franky")
pytest.importorskip("franky_sim")

from envs.cube_pick import CUBE_REST_Z, LIFT_SUCCESS_HEIGHT
from s2robot.data.store import EpisodeStore
from s2robot.real.operator import OPERATOR_NAME, ScriptedOperator
from s2robot.real.teleop import DONE_KEY, GRIPPER_KEY, KEYMAP
from s2robot.sim.env import ARM_ENV_ID, EnvConfig
from s2robot.workflows.record import RecordConfig, record_demos

MAX_STEPS = 120  # an operator's pick takes ~75 steps (measured); ending by Enter shows it was not cut short
KEYS = {"rgb_front", "proprio", "cube_pos", "action", "action_executed", "target", "target_executed"}


def test_scripted_operator_records_two_lifting_demos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``controller=scripted_operator`` through ``record_demos``: key presses only (keymap keys, one gripper press,
    Enter to end), two episodes that each lifted the cube ≥ 5 cm while grasped, stored with the demo keys. The
    episode ends by the operator's Enter (the env does not stop at success), as a person ends one on a real arm."""
    polls: list[list[str]] = []
    poll = ScriptedOperator.poll

    def watched(self: ScriptedOperator) -> list[str]:
        polls.append(poll(self))
        return polls[-1]

    monkeypatch.setattr(ScriptedOperator, "poll", watched)
    env = EnvConfig(id=ARM_ENV_ID, cameras=["front"], image_size=32, max_steps=MAX_STEPS, terminate_on_success=False,
                    options={"host": "franky-sim"})
    out = record_demos(RecordConfig(env=env, out=str(tmp_path / "teleop.zarr"), n_episodes=2, max_attempts=2,
                                    workers=1, tail_steps=0, controller="scripted_operator"), progress=False)

    store = EpisodeStore.open(out)
    assert store.n_episodes == 2 and set(store.keys) == KEYS
    assert store.attrs["recorder"]["policy"] == OPERATOR_NAME
    assert [a["success"] for a in store.attrs["attempts"]] == [True, True]
    for i in range(2):
        info = store.episode_info(i)
        assert info["success"] and info["max_lift"] >= LIFT_SUCCESS_HEIGHT
        assert info["length"] < MAX_STEPS  # ended by Enter
    keys = [k for step in polls for k in step]
    assert set(keys) <= set(KEYMAP)
    assert keys.count(GRIPPER_KEY) == 2 and keys.count(DONE_KEY) == 2  # one close and one Enter per demo
    cube_z = store.get_steps("cube_pos", 0, store.n_steps)[store.episode_ends - 1, 2]  # (2,) at each last step
    assert np.all(cube_z >= CUBE_REST_Z + LIFT_SUCCESS_HEIGHT)  # the recorded demos show the cube up
