"""Forward kinematics of the Franka arm (Panda and FR3 share one DH table): fingertip pose, its Jacobian, hand points.

Pure numpy, so the safety filter can check a joint target's hand against the workspace box *before* anything is
sent, with or without a robot connected. The same chain as ``envs/assets/panda_arm.xml`` and as libfranka's
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


def _corners(part: str, half_x: float, half_y: float, zs: tuple[float, ...]) -> dict[str, tuple[float, float, float]]:
    """The corners of a box in the hand frame, named by their side: ``<part> (+x -y, z +0.066)``."""
    return {f"{part} ({'+' if sx > 0 else '-'}x {'+' if sy > 0 else '-'}y, z {z:+.3f})": (sx * half_x, sy * half_y, z)
            for sx in (1, -1) for sy in (1, -1) for z in zs}


# Points of the Franka Hand in its own frame (origin at the flange, axes of the fingertip frame: z towards the
# fingertips, y along the fingers' opening) [m], from the bounding boxes of Franka's hand and finger meshes (as
# franky-sim ships them): the housing's 8 corners (x ±0.0315, y ±0.104, z −0.026…0.066) and the fingertips' outer
# corners at full opening (finger base 0.0584 past the flange, 0.0539 long, outer face 0.0263 + 0.04 out, x ±0.0105).
# Each part of the hand is convex, so when these corners are inside a box the whole hand is, at any finger opening.
HAND_POINTS: dict[str, tuple[float, float, float]] = {
    "flange": (0.0, 0.0, 0.0),
    "fingertip centre": (0.0, 0.0, TCP_OFFSET),
    **_corners("hand housing corner", 0.0315, 0.104, (-0.026, 0.066)),
    **_corners("fingertip corner", 0.0105, 0.0663, (0.1123,)),
}


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


_FIXED = [_rot_x(alpha) @ _trans(a, 0.0, 0.0) for a, _, alpha in DH]  # RotX(alpha_{i-1}) TransX(a_{i-1}) per joint
_TIP = _trans(0.0, 0.0, FLANGE_D + TCP_OFFSET) @ _rot_z(HAND_YAW)  # joint 7's frame → the fingertip


def joint_frames(q: np.ndarray) -> np.ndarray:
    """Base-frame poses (8, 4, 4) of joint frames 1..7 and the fingertip (end effector) for joints q (7,) [rad]."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (7,):
        raise ValueError(f"q must have shape (7,) (the arm's joint positions [rad]), got {q.shape}")
    frames = np.empty((8, 4, 4))
    pose = np.eye(4)
    turn = np.eye(4)  # RotZ(q_i) TransZ(d_i), filled in place
    for i, (fixed, d) in enumerate(zip(_FIXED, DH[:, 1], strict=True)):
        c, s = np.cos(q[i]), np.sin(q[i])
        turn[:2, :2] = ((c, -s), (s, c))
        turn[2, 3] = d
        pose = pose @ fixed @ turn
        frames[i] = pose
    frames[7] = pose @ _TIP
    return frames


def fingertip_pose(q: np.ndarray) -> np.ndarray:
    """Base-frame pose (4, 4) of the fingertip centre (libfranka's end-effector frame with franky's default TCP)."""
    return joint_frames(q)[7]


def hand_points(tip_pose: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """Base-frame positions (N, 3) [m] of ``HAND_POINTS`` (in their order), then of ``extra`` (M, 3) points given in the
    hand frame (a wrist camera's mount, a tool), for the fingertip pose (4, 4) of ``fingertip_pose``."""
    local = np.asarray(list(HAND_POINTS.values()))  # (14, 3)
    if extra is not None and len(extra):
        local = np.vstack([local, np.asarray(extra, dtype=np.float64).reshape(-1, 3)])
    local = local - (0.0, 0.0, TCP_OFFSET)  # the hand frame is the fingertip frame moved back to the flange
    return local @ tip_pose[:3, :3].T + tip_pose[:3, 3]


def fingertip_jacobian(q: np.ndarray) -> np.ndarray:
    """Geometric Jacobian (6, 7) of the fingertip in the base frame: rows (linear [m/rad], angular [rad/rad])."""
    frames = joint_frames(q)
    tip = frames[7, :3, 3]
    axes = frames[:7, :3, 2]  # (7, 3) each revolute joint turns about its own frame's z axis
    origins = frames[:7, :3, 3]  # (7, 3)
    return np.vstack([np.cross(axes, tip - origins).T, axes.T])
