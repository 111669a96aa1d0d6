"""Forward kinematics of the Franka arm (Panda and FR3 share one DH table): fingertip pose and its Jacobian.

Pure numpy, so the safety filter can check a joint target's fingertip against the workspace box *before* anything
is sent, with or without a robot connected. The same chain as ``envs/assets/panda_arm.xml`` and as libfranka's
model (tested against ``franky.Model`` and franky-sim): modified DH (Craig),
``T_i = RotX(alpha_{i-1}) TransX(a_{i-1}) RotZ(q_i) TransZ(d_i)``, then the flange (d = 0.107 m), the hand
rotated −π/4 about the flange z axis, and the fingertip centre ``TCP_OFFSET`` past the flange along z.
"""

from __future__ import annotations

import numpy as np

# (a_{i-1} [m], d_i [m], alpha_{i-1} [rad]) for joints 1..7, then the flange (no joint).
DH = np.array([
    [0.0, 0.333, 0.0],
    [0.0, 0.0, -np.pi / 2],
    [0.0, 0.316, np.pi / 2],
    [0.0825, 0.0, np.pi / 2],
    [-0.0825, 0.384, -np.pi / 2],
    [0.0, 0.0, np.pi / 2],
    [0.088, 0.0, np.pi / 2],
])
FLANGE_D = 0.107  # flange past joint 7's frame along z [m]
TCP_OFFSET = 0.1034  # fingertip centre past the flange along z [m] (franky's default end effector)
HAND_YAW = -np.pi / 4  # the hand is mounted rotated about the flange z axis [rad]


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def _trans(x: float, y: float, z: float) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = (x, y, z)
    return out


def joint_frames(q: np.ndarray) -> np.ndarray:
    """Base-frame poses (8, 4, 4) of joint frames 1..7 and the fingertip (end effector) for joints q (7,) [rad]."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (7,):
        raise ValueError(f"q must have shape (7,) (the arm's joint positions [rad]), got {q.shape}")
    frames = np.empty((8, 4, 4))
    pose = np.eye(4)
    for i, (a, d, alpha) in enumerate(DH):
        pose = pose @ _rot_x(alpha) @ _trans(a, 0.0, 0.0) @ _rot_z(q[i]) @ _trans(0.0, 0.0, d)
        frames[i] = pose
    frames[7] = pose @ _trans(0.0, 0.0, FLANGE_D + TCP_OFFSET) @ _rot_z(HAND_YAW)
    return frames


def fingertip_pose(q: np.ndarray) -> np.ndarray:
    """Base-frame pose (4, 4) of the fingertip centre (libfranka's end-effector frame with franky's default TCP)."""
    return joint_frames(q)[7]


def fingertip_jacobian(q: np.ndarray) -> np.ndarray:
    """Geometric Jacobian (6, 7) of the fingertip in the base frame: rows (linear [m/rad], angular [rad/rad])."""
    frames = joint_frames(q)
    tip = frames[7, :3, 3]
    axes = frames[:7, :3, 2]  # (7, 3) each revolute joint turns about its own frame's z axis
    origins = frames[:7, :3, 3]  # (7, 3)
    return np.vstack([np.cross(axes, tip - origins).T, axes.T])
