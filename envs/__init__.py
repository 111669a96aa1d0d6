"""Simulation environments (MuJoCo + gymnasium, never torch).

Importing this package registers ``s2robot/CubePick-v0`` with gymnasium (the one side effect: gymnasium's registry
is how ``gymnasium.make`` finds environments) and re-exports the public API.
"""

import gymnasium

from envs.cube_pick import (
    CAMERAS,
    CONTROL_DT,
    CUBE_HALF_SIZE,
    CUBE_REST_Z,
    LIFT_SUCCESS_HEIGHT,
    MAX_JOINT_DELTA,
    SCENE_XML,
    TABLE_TOP_Z,
    CubePickEnv,
)
from envs.expert import ExpertConfig, ExpertStep, Phase, ScriptedExpert
from envs.positions import (
    DEMO_STREAM,
    EVAL_POSITIONS,
    HELD_OUT_STREAM,
    MIN_SEPARATION,
    WORKSPACE,
    Workspace,
    demo_cube_xy,
    held_out_positions,
)

CUBE_PICK_ID = "s2robot/CubePick-v0"

if CUBE_PICK_ID not in gymnasium.registry:  # re-importing (or reloading) must not register twice
    gymnasium.register(id=CUBE_PICK_ID, entry_point="envs.cube_pick:CubePickEnv")

__all__ = [
    "CAMERAS",
    "CONTROL_DT",
    "CUBE_HALF_SIZE",
    "CUBE_PICK_ID",
    "CUBE_REST_Z",
    "DEMO_STREAM",
    "EVAL_POSITIONS",
    "HELD_OUT_STREAM",
    "LIFT_SUCCESS_HEIGHT",
    "MAX_JOINT_DELTA",
    "MIN_SEPARATION",
    "SCENE_XML",
    "TABLE_TOP_Z",
    "WORKSPACE",
    "CubePickEnv",
    "ExpertConfig",
    "ExpertStep",
    "Phase",
    "ScriptedExpert",
    "Workspace",
    "demo_cube_xy",
    "held_out_positions",
]
