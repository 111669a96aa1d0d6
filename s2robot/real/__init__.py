"""The Franka arm (Panda/FR3) through franky, as a gymnasium env: cameras, safety limits, franky-sim rehearsal.

Imports s2robot.common and s2robot.data only, plus the task's constants and the expert's pure helpers from ``envs``;
franky, pyrealsense2 and OpenCV are imported lazily, so the sim-only install never needs them.
"""
