"""The Franka arm (Panda/FR3) through franky, as a gymnasium env: cameras, safety limits, franky-sim rehearsal.

Imports s2robot.common and s2robot.data only, plus the task's constants and the expert's pure helpers from ``envs``;
franky, pyrealsense2 and OpenCV are imported lazily, so the sim-only install never needs them.

Importing this package registers ``s2robot/FrankaReal-v0`` with gymnasium by its entry point's name, its one side
effect: nothing of the arm (``s2robot.real.env``, franky) loads until an env is made. ``s2robot/__init__.py`` imports
it, so every process that uses s2robot can make the arm env by id (``s2robot.sim.env.make_env``), the spawned workers
of an evaluation or a recording included.
"""

import gymnasium

FRANKA_REAL_ID = "s2robot/FrankaReal-v0"  # = s2robot.sim.env.ARM_ENV_ID (tested)

if FRANKA_REAL_ID not in gymnasium.registry:  # re-importing (or reloading) must not register twice
    gymnasium.register(id=FRANKA_REAL_ID, entry_point="s2robot.real.env:FrankaEnv")
