"""Applying a scene variation's parameters (``envs.variation``) to the cube-pick MjModel, and to camera frames.

``SceneEditor`` keeps the model's values as built and, per episode, restores them and writes the parameters over
them: lights, materials, the table's finish, the observation cameras' pose and field of view, the distractor
slots, and for the physical factors the cube's size and friction. Image factors (noise, blur, JPEG) act on the
rendered observation frames (``postprocess``), not on the model. Everything is looked up by name.
"""

from __future__ import annotations

import io
import math
from typing import Any

import mujoco
import numpy as np

from envs.variation import DISTRACTOR_SHAPES, MAX_DISTRACTORS, TABLE_TEXTURES, Params

LIGHTS = ("key", "fill")
_GEOM_TYPES = {"sphere": mujoco.mjtGeom.mjGEOM_SPHERE, "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
               "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE, "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID}
assert set(_GEOM_TYPES) == set(DISTRACTOR_SHAPES)
VISIBLE_GROUP = 2  # the MJCF's visual geom group (rendered); distractor slots wait hidden in group 5
FRICTION_GEOMS = ("cube", "left_pad", "right_pad")  # the contacts that hold the cube in the grasp


def _rotation_quat(rotvec_deg: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation vector [deg]."""
    angle = float(np.linalg.norm(rotvec_deg))
    q = np.array([1.0, 0.0, 0.0, 0.0])
    if angle > 0:
        mujoco.mju_axisAngle2Quat(q, np.asarray(rotvec_deg, float) / angle, math.radians(angle))
    return q


def _rotate_z(v: np.ndarray, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])


def _tilt(direction: np.ndarray, deg: float) -> np.ndarray:
    """``direction`` (3,) raised (deg > 0: more horizontal) or lowered by ``deg`` in its vertical plane."""
    horiz = math.hypot(direction[0], direction[1])
    elev = math.atan2(direction[2], horiz) + math.radians(deg)
    elev = min(max(elev, math.radians(-89.0)), math.radians(-20.0))  # always shining down onto the table
    az = math.atan2(direction[1], direction[0])
    return np.array([math.cos(elev) * math.cos(az), math.cos(elev) * math.sin(az), math.sin(elev)])


def gaussian_blur(frame: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, C) uint8 blurred by a separable Gaussian of std ``sigma`` [px] (edges repeated)."""
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    h, w = frame.shape[:2]
    x = np.pad(frame.astype(np.float32), ((r, r), (r, r), (0, 0)), mode="edge")  # (H+2r, W+2r, C)
    rows = sum(k[i] * x[i:i + h] for i in range(2 * r + 1))  # (H, W+2r, C)
    out = sum(k[i] * rows[:, i:i + w] for i in range(2 * r + 1))  # (H, W, C)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 through a JPEG encode/decode at ``quality`` (1-95)."""
    from PIL import Image  # Pillow: matplotlib's and imageio's dependency; only needed for this factor

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


class SceneEditor:
    """Restores the model as built and applies one episode's variation parameters to it.

    model: the env's MjModel (edited in place); cameras: the observation cameras (pose and field-of-view factors
    move them; the ``video`` camera keeps its view, so videos show the scene the same way).
    """

    def __init__(self, model: mujoco.MjModel, cameras: tuple[str, ...]) -> None:
        self.model = model
        self.cameras = np.array([model.camera(c).id for c in cameras], dtype=int)
        self.lights = np.array([model.light(n).id for n in LIGHTS], dtype=int)
        self.cube_geom = model.geom("cube").id
        self.table_geom = model.geom("table_top").id
        self.materials = {n: model.material(n).id for n in ("cube", "table", "floor")}
        self.table_materials = {t: model.material("table" if t == "plain" else f"table_{t}").id
                                for t in TABLE_TEXTURES}
        self.distractors = np.array([model.geom(f"distractor{i}").id for i in range(MAX_DISTRACTORS)], dtype=int)
        self.friction_geoms = np.array([model.geom(n).id for n in FRICTION_GEOMS], dtype=int)
        m = model
        # the values as built: (array, index, copy) for everything apply() may change
        self._base = [(arr, idx, np.array(arr[idx], copy=True)) for arr, idx in [
            (m.light_diffuse, slice(None)), (m.light_dir, slice(None)), (m.light_pos, slice(None)),
            (m.vis.headlight.diffuse, slice(None)), (m.vis.headlight.ambient, slice(None)),
            (m.mat_rgba, slice(None)), (m.geom_matid, self.table_geom),
            (m.cam_pos, self.cameras), (m.cam_quat, self.cameras), (m.cam_fovy, self.cameras),
            (m.geom_size, self.cube_geom), (m.geom_rbound, self.cube_geom), (m.geom_aabb, self.cube_geom),
            (m.geom_friction, self.friction_geoms),
            (m.geom_type, self.distractors), (m.geom_size, self.distractors), (m.geom_rbound, self.distractors),
            (m.geom_pos, self.distractors), (m.geom_quat, self.distractors), (m.geom_rgba, self.distractors),
            (m.geom_group, self.distractors)]]
        self.cube_half_size = float(m.geom_size[self.cube_geom, 0])
        self.params: Params = {}

    def apply(self, params: Params) -> None:
        """Restore the model as built, then apply ``params`` (``envs.variation.sample``'s). Call ``mj_forward``
        afterwards: camera, light and distractor poses reach ``data`` through the kinematics."""
        for arr, idx, value in self._base:
            arr[idx] = value
        m = self.model
        self.params = params
        light_rgb = np.ones(3)
        if "light_intensity" in params:
            light_rgb *= params["light_intensity"]["scale"]
        if "light_color" in params:
            light_rgb *= np.asarray(params["light_color"]["rgb"])
        m.light_diffuse[self.lights] *= light_rgb
        m.vis.headlight.diffuse[:] *= light_rgb
        m.vis.headlight.ambient[:] *= light_rgb
        if "light_direction" in params:
            p = params["light_direction"]
            for i in self.lights:
                m.light_dir[i] = _tilt(_rotate_z(m.light_dir[i], p["azimuth_deg"]), -p["elevation_deg"])
                m.light_pos[i] = _rotate_z(m.light_pos[i], p["azimuth_deg"])
        for name, factor in (("cube", "cube_color"), ("floor", "background_color")):
            if factor in params:
                m.mat_rgba[self.materials[name], :3] = params[factor]["rgb"]
        if "table_color" in params:
            mat = self.table_materials[params["table_color"]["texture"]]
            m.geom_matid[self.table_geom] = mat
            m.mat_rgba[mat, :3] = params["table_color"]["rgb"]
        if "camera_pose" in params:
            p = params["camera_pose"]
            for c in self.cameras:
                m.cam_pos[c] += p["offset_m"]
                quat = np.empty(4)
                mujoco.mju_mulQuat(quat, m.cam_quat[c].copy(), _rotation_quat(np.asarray(p["rotation_deg"])))
                m.cam_quat[c] = quat
        if "camera_fov" in params:
            m.cam_fovy[self.cameras] += params["camera_fov"]["fovy_delta_deg"]
        for slot, obj in zip(self.distractors, params.get("distractors", {}).get("objects", []), strict=False):
            self._place(slot, obj)
        if "cube_size" in params:
            s = params["cube_size"]["scale"]
            m.geom_size[self.cube_geom] *= s
            m.geom_rbound[self.cube_geom] *= s
            m.geom_aabb[self.cube_geom] *= s  # (centre, half sizes): the centre is 0
        if "cube_friction" in params:
            m.geom_friction[self.friction_geoms, 0] *= params["cube_friction"]["scale"]
        self.cube_half_size = float(m.geom_size[self.cube_geom, 0])

    def _place(self, geom: int, obj: dict[str, Any]) -> None:
        """Shape, size, colour and pose of one distractor slot; it stands on the table (z = 0)."""
        m, r = self.model, obj["size"]
        shape = obj["shape"]
        m.geom_type[geom] = _GEOM_TYPES[shape]
        if shape == "sphere":
            size, z = (r, 0, 0), r
        elif shape == "cylinder":
            size, z = (r, 1.2 * r, 0), 1.2 * r
        elif shape == "capsule":  # lying on its side: a rounded bar
            size, z = (0.7 * r, 1.5 * r, 0), 0.7 * r
        else:  # ellipsoid, flattened
            size, z = (1.3 * r, 0.8 * r, 0.6 * r), 0.6 * r
        m.geom_size[geom] = size
        m.geom_rbound[geom] = float(np.linalg.norm(size)) + r
        m.geom_pos[geom] = (obj["xy"][0], obj["xy"][1], z)
        quat = np.empty(4)
        mujoco.mju_axisAngle2Quat(quat, np.array([0.0, 0.0, 1.0]), obj["yaw"])
        if shape == "capsule":  # the capsule's axis (z) laid along the table
            lay = np.empty(4)
            mujoco.mju_axisAngle2Quat(lay, np.array([1.0, 0.0, 0.0]), math.pi / 2)
            mujoco.mju_mulQuat(quat, quat.copy(), lay)
        m.geom_quat[geom] = quat
        m.geom_rgba[geom] = (*obj["rgb"], 1.0)
        m.geom_group[geom] = VISIBLE_GROUP

    @property
    def changes_frames(self) -> bool:
        """Whether ``postprocess`` changes frames in this episode."""
        return any(k in self.params for k in ("image_noise", "image_blur", "image_jpeg"))

    def postprocess(self, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """An observation frame (H, W, 3) uint8 after this episode's image factors: blur (the lens), then noise (the
        sensor), then JPEG (the transport); ``rng`` draws the noise."""
        p = self.params
        if "image_blur" in p:
            frame = gaussian_blur(frame, p["image_blur"]["sigma_px"])
        if "image_noise" in p:
            noise = rng.standard_normal(frame.shape, dtype=np.float32) * p["image_noise"]["sigma"]
            frame = np.clip(frame + noise + 0.5, 0, 255).astype(np.uint8)
        if "image_jpeg" in p:
            frame = jpeg(frame, p["image_jpeg"]["quality"])
        return frame
