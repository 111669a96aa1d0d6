"""Cameras behind one small interface: ``read() -> Frame`` of (S, S, 3) uint8 RGB with a timestamp, and ``close()``.

Sources: a USB/V4L2 camera or video file through OpenCV, an Intel RealSense through pyrealsense2, and a MuJoCo
camera of a scene that something else steps (the franky-sim rehearsal). Every frame is centre-cropped to a
square and resized to the policy's image size S, so the env can put it straight into ``obs[<camera name>]``.

Timestamps are host ``time.monotonic()`` seconds taken when the frame arrived from the driver (it lags the
exposure by the camera's latency, a few tens of ms); a RealSense also keeps its hardware timestamp in
``Frame.device_timestamp``. A rehearsal's scene camera keeps its capture time on the simulated clock there, and the
frame's age at the read in ``Frame.age`` (``real.camera_timing``: the delays of a RealSense, simulated). OpenCV and
pyrealsense2 are optional and imported only by the classes that use them.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple, Protocol, Self

import numpy as np

INSTALL_HINT = "pip install -e '.[real]'"
SOURCE_FORMS = "'opencv:<index or path>', 'realsense', 'realsense:<serial>', 'mujoco:<camera name>'"
MUJOCO_POLL_S = 0.002  # wall-clock pause between asks for a scene camera's next frame [s]
# Wall time a scene camera that counts its stall on the scene's clock waits beyond stall_timeout_s while that clock
# stands still, before it reports the scene stopped [s] (the env waits as long on a robot clock that does not move)
FROZEN_SCENE_S = 6.0


@dataclass(frozen=True)
class SceneShot:
    """A scene camera's frame as the camera delivers it: rgb (H, W, 3) uint8, its capture time and the time of the
    read [s] on the scene's clock, and its frame number (a read that gets the number of the last one got no new frame).
    """

    rgb: np.ndarray
    captured: float
    now: float
    index: int


# (camera, height, width) -> (H, W, 3) uint8 RGB of the scene now, or the SceneShot its camera delivers now (None
# before its first frame has arrived)
Render = Callable[[str, int, int], np.ndarray | SceneShot | None]


class CameraError(RuntimeError):
    """A camera is missing, cannot be opened, or stalls; the message names the camera, its source and the fix."""


@dataclass(frozen=True)
class Frame:
    """One camera frame.

    rgb: (S, S, 3) uint8 RGB, centre-cropped and resized to the camera's size
    timestamp: host ``time.monotonic()`` time at which the frame arrived [s]
    index: frame counter of this camera, 0 for its first frame
    device_timestamp: the camera's own hardware timestamp [s] on its clock, when it has one (a rehearsal's scene
        camera: the capture time on the simulated clock)
    age: how long before the read the frame was captured [s], when the source knows it (a rehearsal's scene camera)
    """

    rgb: np.ndarray
    timestamp: float
    index: int
    device_timestamp: float | None = None
    age: float | None = None

    def __post_init__(self) -> None:
        s = self.rgb.shape
        if self.rgb.dtype != np.uint8 or len(s) != 3 or s[2] != 3 or s[0] != s[1]:
            raise ValueError(f"Frame.rgb must be (S, S, 3) uint8; got {s} {self.rgb.dtype}")


class Camera(Protocol):
    """What the env needs from a camera: a name, where its frames come from, frames, and a way to let go."""

    name: str  # the observation key, e.g. "front"
    source: str  # e.g. "opencv:0", "realsense:123456789", "mujoco:front"

    def read(self) -> Frame:
        """The next new frame; blocks at most ``stall_timeout_s``, raising ``CameraError`` when none arrives."""
        ...

    def close(self) -> None:
        """Release the device; calling it twice is harmless."""
        ...


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 → (size, size, 3) uint8: centre square crop of side min(H, W), then resize.

    Shrinking averages over each output pixel's footprint (area/box filter, OpenCV's INTER_AREA; exactly the
    block mean when the side is an integer multiple of ``size``); enlarging is bilinear with half-pixel centres.
    Values are rounded to nearest (ties to even). Always returns a new array.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"center_crop_resize needs an (H, W, 3) uint8 RGB image; got {got}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"center_crop_resize needs a positive integer size [px]; got {size!r}")
    h, w = image.shape[:2]
    side = min(h, w)
    if side == 0:
        raise ValueError(f"center_crop_resize got an empty image of shape {image.shape}")
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side]  # (side, side, 3)
    if side == size:
        return square.copy()
    # float32 halves the time of float64 (7 ms for 480² → 224² here) and keeps the 2× block mean exact
    m = (_area_weights(side, size) if side > size else _bilinear_weights(side, size)).astype(np.float32)  # (size, side)
    rows = (m @ square.reshape(side, side * 3).astype(np.float32)).reshape(size, side, 3)  # resize rows
    out = m @ rows  # (size, size, 3): the same 1-D filter along columns, once per output row
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: output pixel i averages input interval [i, i+1)·n_in/n_out by overlap length."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]  # (n_out, 1) footprint of each output pixel, in input pixels
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0.0, None)  # (n_out, n_in)
    return overlap / overlap.sum(axis=1, keepdims=True)


def _bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights, half-pixel centres, edges clamped."""
    x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    x0 = np.floor(x).astype(int)
    x1 = np.minimum(x0 + 1, n_in - 1)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), x0), 1 - (x - x0))
    np.add.at(m, (np.arange(n_out), x1), x - x0)
    return m


class Raw(NamedTuple):
    """What a driver gave: (H, W, 3) uint8 RGB, its device timestamp [s] and its age at the read [s], when known."""

    rgb: np.ndarray
    device_timestamp: float | None = None
    age: float | None = None


def _require(module: str, what: str, camera: str) -> ModuleType:
    """Import an optional vendor module, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{camera} needs {what} (module {module}), which is not installed: {INSTALL_HINT}") from e


class _PolledCamera:
    """Shared read loop: poll the driver until a new frame comes or ``stall_timeout_s`` passes."""

    hint = "check the cable and USB bandwidth, or raise stall_timeout_s"

    def __init__(self, name: str, source: str, size: int, stall_timeout_s: float,
                 clock: Callable[[], float] | None = None) -> None:
        if size < 1 or stall_timeout_s <= 0:
            raise ValueError(f"camera {name!r} ({source}) needs size ≥ 1 [px] and stall_timeout_s > 0 [s]; "
                             f"got {size}, {stall_timeout_s}")
        self.name, self.source, self.size, self.stall_timeout_s = name, source, size, stall_timeout_s
        self._clock = clock  # a scene's clock [s] to count a stall on; None: wall time
        self._index = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.source!r}, size={self.size})"

    def _poll(self, timeout_s: float) -> Raw | None:
        """One attempt of at most ``timeout_s`` [s]: the new frame, or None."""
        raise NotImplementedError

    def read(self) -> Frame:
        clock = self._clock or time.monotonic  # the stall is counted on it: wall time, or a scene camera's scene time
        start = clock()
        wall_start = time.monotonic()
        while True:
            remaining = self.stall_timeout_s - (clock() - start)
            got = self._poll(max(remaining, 1e-3))
            now = time.monotonic()
            if got is not None:
                frame = Frame(center_crop_resize(got.rgb, self.size), now, self._index, got.device_timestamp, got.age)
                self._index += 1
                return frame
            waited = clock() - start
            if waited >= self.stall_timeout_s:
                on = " of scene time" if self._clock else ""
                raise CameraError(f"camera {self.name!r} ({self.source}) delivered no new frame for "
                                  f"{self.stall_timeout_s:g} s{on}: {self.hint}")
            if self._clock is not None and now - wall_start >= self.stall_timeout_s + FROZEN_SCENE_S:
                raise CameraError(f"camera {self.name!r} ({self.source}): its scene's clock moved {waited:.3g} s in "
                                  f"{now - wall_start:.0f} s of wall time without a new frame: has the simulation "
                                  "stopped?")

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OpenCVCamera(_PolledCamera):
    """A V4L2/USB camera (device index) or a video file/stream (path or URL) through ``cv2.VideoCapture``.

    width, height: requested capture resolution [px] (the driver may pick another); fps: requested rate [Hz].
    """

    def __init__(self, name: str, device: int | str, size: int, stall_timeout_s: float = 1.0, *,
                 width: int | None = None, height: int | None = None, fps: float | None = None) -> None:
        super().__init__(name, f"opencv:{device}", size, stall_timeout_s)
        self._cv2 = _require("cv2", "OpenCV", f"camera {name!r} ({self.source})")
        self._cap = self._cv2.VideoCapture(device)
        if not self._cap.isOpened():
            self._cap.release()
            raise CameraError(f"camera {name!r} ({self.source}) not found or cannot be opened: list devices "
                              f"with `v4l2-ctl --list-devices`, check the path, and that no other process holds it")
        for prop, value in (("CAP_PROP_FRAME_WIDTH", width), ("CAP_PROP_FRAME_HEIGHT", height),
                            ("CAP_PROP_FPS", fps)):
            if value is not None:
                self._cap.set(getattr(self._cv2, prop), value)
        if hasattr(self._cv2, "CAP_PROP_BUFFERSIZE"):  # the newest frame, not one queued ~4 frames (130 ms) ago
            self._cap.set(self._cv2.CAP_PROP_BUFFERSIZE, 1)

    def _poll(self, timeout_s: float) -> Raw | None:
        ok, bgr = self._cap.read()  # blocks for the next frame; fails at once when the device is gone
        if not ok or bgr is None:
            time.sleep(min(0.01, timeout_s))  # don't spin on a dead device
            return None
        return Raw(np.ascontiguousarray(bgr[..., ::-1]))  # BGR → RGB

    def close(self) -> None:
        self._cap.release()


class RealSenseCamera(_PolledCamera):
    """The colour stream (rgb8) of an Intel RealSense through pyrealsense2.

    serial: the device's serial number; None takes the first connected one.
    width, height: colour stream resolution [px]; fps: stream rate [Hz] (must be a mode the camera offers).
    ``Frame.device_timestamp`` is the RealSense timestamp [s] (its own ms clock, converted to s).
    """

    hint = "check the cable (USB 3), or raise stall_timeout_s"

    def __init__(self, name: str, serial: str | None, size: int, stall_timeout_s: float = 1.0, *,
                 width: int = 640, height: int = 480, fps: int = 30) -> None:
        super().__init__(name, f"realsense:{serial}" if serial else "realsense", size, stall_timeout_s)
        rs = _require("pyrealsense2", "the RealSense SDK", f"camera {name!r} ({self.source})")
        ctx = rs.context()
        serials = [d.get_info(rs.camera_info.serial_number) for d in ctx.query_devices()]
        if not serials:
            raise CameraError(f"camera {name!r} ({self.source}) not found: no RealSense is connected; check the "
                              f"USB 3 cable and `rs-enumerate-devices`")
        if serial is None:
            serial = serials[0]
        elif serial not in serials:
            raise CameraError(f"camera {name!r} ({self.source}) not found: connected RealSense serials are "
                              f"{serials}; set the source to 'realsense:<one of them>'")
        self.serial = serial
        config = rs.config()
        config.enable_device(serial)
        config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        self._pipe = rs.pipeline(ctx)
        try:
            self._pipe.start(config)
        except RuntimeError as e:
            raise CameraError(f"camera {name!r} ({self.source}) cannot start a {width}x{height} rgb8 stream at "
                              f"{fps} Hz ({e}): pick a mode listed by `rs-enumerate-devices`") from e
        self._last_number: int | None = None

    def _poll(self, timeout_s: float) -> Raw | None:
        try:
            frames = self._pipe.wait_for_frames(max(1, int(timeout_s * 1000)))
        except RuntimeError:  # "Frame didn't arrive within ..."
            return None
        color = frames.get_color_frame()
        if not color or color.get_frame_number() == self._last_number:  # a repeat is not a new frame
            return None
        self._last_number = color.get_frame_number()
        return Raw(np.asanyarray(color.get_data()), color.get_timestamp() / 1000.0)  # [ms] → [s]

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.stop()
            self._pipe = None


class MujocoCamera(_PolledCamera):
    """A named camera of a MuJoCo scene that something else steps; ``render`` takes the scene's own lock.

    render: ``render(camera, height, width)`` → (H, W, 3) uint8 RGB of the scene as it is now (rendering is
    synchronous, so ``read`` never stalls), or the ``SceneShot`` the scene's camera delivers now (the rehearsal's,
    with a real camera's frame rate and latency: ``read`` then waits for a frame it has not returned yet, and the frame
    keeps its capture time and age on the scene's clock). clock: the scene's time [s]; given, a stall is
    ``stall_timeout_s`` of scene time without a new frame, so a scene slowed by a busy CPU does not stall its camera,
    and a scene whose clock stands still is reported after ``FROZEN_SCENE_S`` more of wall time.
    """

    hint = "check the scene's camera timing (camera_fps), or raise stall_timeout_s"

    def __init__(self, name: str, render: Render, camera: str, size: int, stall_timeout_s: float = 1.0,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(name, f"mujoco:{camera}", size, stall_timeout_s, clock)
        self._render, self.camera = render, camera
        self._last: int | None = None  # the number of the last SceneShot returned

    def _poll(self, timeout_s: float) -> Raw | None:
        got = self._render(self.camera, self.size, self.size)
        if isinstance(got, np.ndarray):
            return Raw(got)
        if got is None or got.index == self._last:  # nothing new has arrived yet: the scene's clock must move on
            time.sleep(min(MUJOCO_POLL_S, timeout_s))
            return None
        self._last = got.index
        return Raw(got.rgb, got.captured, got.now - got.captured)


def open_camera(name: str, source: str, size: int, *, stall_timeout_s: float = 1.0,
                render: Render | None = None, clock: Callable[[], float] | None = None) -> Camera:
    """The camera that ``source`` names: 'opencv:<index or path>', 'realsense[:<serial>]', 'mujoco:<camera>'.

    render: the scene's ``render(camera, height, width)``, needed by (only) mujoco sources; clock: the scene's time,
    which a mujoco source counts its stall on (``MujocoCamera``).
    """
    scheme, _, rest = source.partition(":")
    kw: dict[str, Any] = {"stall_timeout_s": stall_timeout_s}
    if scheme == "opencv" and rest:
        return OpenCVCamera(name, int(rest) if rest.isdigit() else rest, size, **kw)
    if scheme == "realsense":
        return RealSenseCamera(name, rest or None, size, **kw)
    if scheme == "mujoco" and rest:
        if render is None:
            raise ValueError(f"camera {name!r} ({source}) needs render=<the scene's render(camera, h, w)>")
        return MujocoCamera(name, render, rest, size, clock=clock, **kw)
    raise ValueError(f"camera {name!r}: unknown source {source!r}; accepted forms are {SOURCE_FORMS}")
