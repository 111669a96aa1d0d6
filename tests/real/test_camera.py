"""Cameras: crop/resize, source parsing, and the OpenCV/RealSense/MuJoCo classes against small fake vendor modules."""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import pytest

import s2robot.real.camera as camera_module
from s2robot.real.camera import (
    CameraError,
    MujocoCamera,
    OpenCVCamera,
    RealSenseCamera,
    SceneShot,
    center_crop_resize,
    open_camera,
)


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- fakes: only what our classes call --------------------------------------------------------------------------

class FakeCapture:
    """cv2.VideoCapture that yields the frames it was given (BGR), then fails."""

    frames: ClassVar[list[np.ndarray]] = []
    opened = True
    instances: ClassVar[list[FakeCapture]] = []

    def __init__(self, device: int | str) -> None:
        self.device, self.released, self.props = device, False, {}
        self._frames: Iterator[np.ndarray] = iter(list(FakeCapture.frames))
        FakeCapture.instances.append(self)

    def isOpened(self) -> bool:  # OpenCV's name
        return FakeCapture.opened

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        frame = next(self._frames, None)
        return frame is not None, frame

    def release(self) -> None:
        self.released = True


@pytest.fixture
def fake_cv2(monkeypatch: pytest.MonkeyPatch) -> type[FakeCapture]:
    mod = types.ModuleType("cv2")
    mod.VideoCapture = FakeCapture
    mod.CAP_PROP_FRAME_WIDTH, mod.CAP_PROP_FRAME_HEIGHT, mod.CAP_PROP_FPS = 3, 4, 5
    monkeypatch.setitem(sys.modules, "cv2", mod)
    monkeypatch.setattr(FakeCapture, "frames", [random_image(6, 8, 1), random_image(6, 8, 2)])
    monkeypatch.setattr(FakeCapture, "opened", True)
    monkeypatch.setattr(FakeCapture, "instances", [])
    return FakeCapture


class FakeColorFrame:
    def __init__(self, number: int, ms: float) -> None:
        self.number, self.ms = number, ms

    def __bool__(self) -> bool:
        return True

    def get_frame_number(self) -> int:
        return self.number

    def get_timestamp(self) -> float:
        return self.ms

    def get_data(self) -> np.ndarray:
        return np.full((4, 4, 3), self.number, np.uint8)


class FakePipeline:
    """rs.pipeline whose wait_for_frames hands out the queued colour frames, then times out."""

    queue: ClassVar[list[FakeColorFrame]] = []

    def __init__(self, ctx: object) -> None:
        self.started, self._queue = False, list(FakePipeline.queue)

    def start(self, config: object) -> None:
        self.started = True

    def wait_for_frames(self, timeout_ms: int) -> types.SimpleNamespace:
        if not self._queue:
            time.sleep(timeout_ms / 1000)
            raise RuntimeError(f"Frame didn't arrive within {timeout_ms}")
        color = self._queue.pop(0)
        return types.SimpleNamespace(get_color_frame=lambda: color)

    def stop(self) -> None:
        self.started = False


@pytest.fixture
def fake_rs(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    serials = ["111", "222"]
    device = [types.SimpleNamespace(get_info=lambda key, s=s: s) for s in serials]
    noop = types.SimpleNamespace(enable_device=lambda serial: None, enable_stream=lambda *a: None)
    mod = types.ModuleType("pyrealsense2")
    mod.context = lambda: types.SimpleNamespace(query_devices=lambda: device)
    mod.camera_info = types.SimpleNamespace(serial_number="serial")
    mod.stream, mod.format = types.SimpleNamespace(color="color"), types.SimpleNamespace(rgb8="rgb8")
    mod.config, mod.pipeline = lambda: noop, FakePipeline
    monkeypatch.setitem(sys.modules, "pyrealsense2", mod)
    monkeypatch.setattr(FakePipeline, "queue", [])
    return mod


# --- center_crop_resize -------------------------------------------------------------------------------------

def test_resize_is_identity_at_size() -> None:
    """An image already size×size comes back unchanged, as a copy."""
    img = random_image(16, 16)
    out = center_crop_resize(img, 16)
    np.testing.assert_array_equal(out, img)
    assert out is not img and not np.shares_memory(out, img)


def test_downscale_by_two_is_the_block_mean() -> None:
    """Halving the side averages each 2×2 block, rounded to nearest."""
    img = random_image(8, 8)
    block_mean = img.astype(np.float64).reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(center_crop_resize(img, 4), np.rint(block_mean).astype(np.uint8))


def test_crop_of_wide_and_tall_images_keeps_the_centre() -> None:
    """A wide (tall) image loses equal strips left and right (top and bottom)."""
    wide = random_image(10, 16)
    np.testing.assert_array_equal(center_crop_resize(wide, 10), wide[:, 3:13])
    tall = random_image(15, 9)
    np.testing.assert_array_equal(center_crop_resize(tall, 9), tall[3:12])


def test_constant_image_stays_constant_at_any_size() -> None:
    """Shrinking by non-integer factors and enlarging keep a constant image constant."""
    img = np.full((30, 40, 3), (7, 128, 250), np.uint8)
    for size in (1, 7, 13, 30, 31, 64):
        out = center_crop_resize(img, size)
        assert out.shape == (size, size, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, np.broadcast_to(np.array([7, 128, 250], np.uint8), out.shape))


def test_enlarge_is_bilinear_with_half_pixel_centres() -> None:
    """Doubling [0, 255] gives 0, 64, 191, 255 along the ramp and repeats across it."""
    img = np.zeros((2, 2, 3), np.uint8)
    img[:, 1] = 255
    out = center_crop_resize(img, 4)
    np.testing.assert_array_equal(out[:, :, 0], np.tile([0, 64, 191, 255], (4, 1)))


@pytest.mark.parametrize(("image", "size"), [(np.zeros((8, 8, 3), np.float32), 4), (np.zeros((8, 8), np.uint8), 4),
                                             (np.zeros((8, 8, 4), np.uint8), 4), (np.zeros((8, 8, 3), np.uint8), 0),
                                             (np.zeros((0, 8, 3), np.uint8), 4)])
def test_resize_rejects_bad_input(image: np.ndarray, size: int) -> None:
    """A wrong dtype, shape or size, or an empty image, is a ValueError that names what it needs."""
    with pytest.raises(ValueError, match="center_crop_resize"):
        center_crop_resize(image, size)


# --- open_camera ------------------------------------------------------------------------------------------------

def test_open_camera_parses_sources(fake_cv2: type[FakeCapture], fake_rs: types.ModuleType) -> None:
    """Each accepted form opens the right class with the right device, serial or MuJoCo camera."""
    cam = open_camera("front", "opencv:2", 8, stall_timeout_s=0.5)
    assert isinstance(cam, OpenCVCamera) and fake_cv2.instances[-1].device == 2
    assert cam.source == "opencv:2" and cam.stall_timeout_s == 0.5
    open_camera("front", "opencv:/dev/video4", 8)
    assert fake_cv2.instances[-1].device == "/dev/video4"
    first, named = open_camera("w", "realsense", 8), open_camera("w", "realsense:222", 8)
    assert isinstance(first, RealSenseCamera) and (first.serial, named.serial) == ("111", "222")
    sim = open_camera("wrist", "mujoco:wrist_cam", 8, render=lambda c, h, w: np.zeros((h, w, 3), np.uint8))
    assert isinstance(sim, MujocoCamera) and sim.camera == "wrist_cam" and sim.source == "mujoco:wrist_cam"


@pytest.mark.parametrize("source", ["usb:0", "opencv:", "opencv", "mujoco:", "front"])
def test_open_camera_rejects_unknown_sources(source: str) -> None:
    """An unknown or incomplete source is a ValueError listing the accepted forms."""
    with pytest.raises(ValueError, match=r"accepted forms .*opencv:<index or path>.*realsense.*mujoco"):
        open_camera("front", source, 8)


def test_mujoco_source_needs_render() -> None:
    """A mujoco source without a render function says so."""
    with pytest.raises(ValueError, match="needs render"):
        open_camera("front", "mujoco:front", 8)


# --- OpenCV -------------------------------------------------------------------------------------------------------

def test_opencv_camera_reads_frames_then_reports_a_stall(fake_cv2: type[FakeCapture]) -> None:
    """Two frames come with increasing index and timestamp; then a CameraError within about stall_timeout_s."""
    with OpenCVCamera("front", 0, 4, stall_timeout_s=0.2, width=640, fps=30) as cam:
        a, b = cam.read(), cam.read()
        assert (a.index, b.index) == (0, 1) and a.timestamp < b.timestamp <= time.monotonic()
        assert a.rgb.shape == (4, 4, 3) and a.rgb.dtype == np.uint8
        start = time.monotonic()
        with pytest.raises(CameraError, match=r"camera 'front' \(opencv:0\) delivered no new frame for 0.2 s"):
            cam.read()
        assert 0.2 <= time.monotonic() - start < 0.6
    capture = fake_cv2.instances[-1]
    assert capture.released and capture.props == {3: 640, 5: 30}


def test_opencv_camera_not_opened_names_the_device(fake_cv2: type[FakeCapture]) -> None:
    """A capture that does not open is a CameraError naming the camera, the device and how to list devices."""
    fake_cv2.opened = False
    with pytest.raises(CameraError, match=r"camera 'wrist' \(opencv:/dev/video7\) not found.*v4l2-ctl"):
        OpenCVCamera("wrist", "/dev/video7", 8)


def test_opencv_camera_converts_bgr_to_rgb(fake_cv2: type[FakeCapture]) -> None:
    """A pure-blue BGR pixel comes out as RGB (0, 0, 255)."""
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[1, 2] = (255, 10, 0)  # B, G, R
    fake_cv2.frames = [bgr]
    rgb = OpenCVCamera("front", 0, 4).read().rgb
    assert tuple(rgb[1, 2]) == (0, 10, 255) and rgb.sum() == 265


@pytest.mark.parametrize(("module", "source"), [("cv2", "opencv:0"), ("pyrealsense2", "realsense")])
def test_missing_vendor_module_says_how_to_install(monkeypatch: pytest.MonkeyPatch, module: str, source: str) -> None:
    """Without cv2 or pyrealsense2 the error names the camera and the pip extra that installs it."""
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match=rf"camera 'front' .*{module}.*pip install -e '\.\[real\]'"):
        open_camera("front", source, 8)


# --- RealSense ------------------------------------------------------------------------------------------------

def test_realsense_unknown_serial_lists_the_connected_ones(fake_rs: types.ModuleType) -> None:
    """An unknown serial is a CameraError that lists the serials that are connected."""
    with pytest.raises(CameraError, match=r"camera 'front' \(realsense:999\) not found.*\['111', '222'\]"):
        RealSenseCamera("front", "999", 8)


def test_realsense_no_device_is_a_camera_error(fake_rs: types.ModuleType) -> None:
    """No connected RealSense at all is a CameraError, not an IndexError."""
    fake_rs.context = lambda: types.SimpleNamespace(query_devices=lambda: [])
    with pytest.raises(CameraError, match="no RealSense is connected"):
        RealSenseCamera("front", None, 8)


def test_realsense_keeps_device_time_skips_repeats_and_times_out(fake_rs: types.ModuleType) -> None:
    """Device ms become seconds, a repeated frame number is not a new frame, and silence is a CameraError."""
    FakePipeline.queue = [FakeColorFrame(5, 1500.0), FakeColorFrame(5, 1500.0), FakeColorFrame(6, 1533.0)]
    cam = RealSenseCamera("front", "222", 2, stall_timeout_s=0.1)
    a, b = cam.read(), cam.read()
    assert (a.device_timestamp, b.device_timestamp) == (1.5, 1.533) and (a.index, b.index) == (0, 1)
    assert a.rgb[0, 0, 0] == 5 and b.rgb[0, 0, 0] == 6 and a.timestamp < b.timestamp
    with pytest.raises(CameraError, match=r"\(realsense:222\) delivered no new frame for 0.1 s"):
        cam.read()
    cam.close()
    cam.close()  # twice is harmless


# --- MuJoCo -------------------------------------------------------------------------------------------------------

def test_mujoco_camera_renders_at_size_and_passes_the_camera_name() -> None:
    """read() asks the scene for its camera at (size, size) and returns that image with a timestamp."""
    calls = []

    def render(camera: str, height: int, width: int) -> np.ndarray:
        calls.append((camera, height, width))
        return random_image(height, width, seed=len(calls))

    with MujocoCamera("front", render, "front_cam", 6) as cam:
        before = time.monotonic()
        a, b = cam.read(), cam.read()
    assert calls == [("front_cam", 6, 6)] * 2
    np.testing.assert_array_equal(a.rgb, random_image(6, 6, seed=1))
    assert before <= a.timestamp < b.timestamp and (a.index, b.index) == (0, 1) and a.device_timestamp is None


def test_mujoco_camera_with_a_timed_scene_waits_for_a_new_frame_and_keeps_its_capture_time() -> None:
    """A scene delivering frames as a real camera does (``SceneShot``): before the first arrives, and while the newest
    is one already returned, read() asks again; a frame keeps its capture time (scene clock) and its age at the read."""
    shots = iter([None, SceneShot(random_image(6, 6, 1), 0.40, 0.46, 7),
                  SceneShot(random_image(6, 6, 1), 0.40, 0.47, 7), SceneShot(random_image(6, 6, 2), 0.433, 0.50, 8)])

    def render(camera: str, height: int, width: int) -> SceneShot | None:
        return next(shots)

    with MujocoCamera("front", render, "front", 6) as cam:
        a, b = cam.read(), cam.read()
    np.testing.assert_array_equal(a.rgb, random_image(6, 6, 1))
    np.testing.assert_array_equal(b.rgb, random_image(6, 6, 2))
    assert (a.device_timestamp, b.device_timestamp, a.index, b.index) == (0.40, 0.433, 0, 1)
    assert a.age == pytest.approx(0.06) and b.age == pytest.approx(0.067)


def test_mujoco_camera_whose_timed_scene_stops_delivering_reports_a_stall() -> None:
    shot = SceneShot(random_image(6, 6), 0.1, 0.2, 1)
    with MujocoCamera("front", lambda *_: shot, "front", 6, stall_timeout_s=0.2) as cam:
        cam.read()
        with pytest.raises(CameraError, match=r"camera 'front' \(mujoco:front\) delivered no new frame for 0.2 s"):
            cam.read()


def test_a_scene_camera_counts_its_stall_on_the_scene_clock() -> None:
    """Given the scene's clock, a stall is stall_timeout_s of scene time: a scene slowed by a busy CPU (here its clock
    moves 0.5 ms a poll, so the new frame comes after 0.15 s of scene time but ≥ 0.6 s of wall time) is read, not
    reported; without new frames the stall is reported on the scene clock, saying so."""
    polls = [0]
    old, new = SceneShot(random_image(6, 6, 1), 0.0, 0.0, 1), SceneShot(random_image(6, 6, 2), 0.15, 0.15, 2)

    def render(*_: object) -> SceneShot:
        polls[0] += 1
        return new if polls[0] > 300 else old

    with MujocoCamera("front", render, "front", 6, stall_timeout_s=0.2, clock=lambda: polls[0] * 5e-4) as cam:
        assert cam.read().index == 0  # the old frame
        np.testing.assert_array_equal(cam.read().rgb, random_image(6, 6, 2))
        with pytest.raises(CameraError, match=r"no new frame for 0\.2 s of scene time: check the scene's camera"):
            cam.read()


def test_a_scene_camera_whose_clock_stands_still_reports_the_scene_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(camera_module, "FROZEN_SCENE_S", 0.1)
    shot = SceneShot(random_image(6, 6), 0.1, 0.1, 1)
    with MujocoCamera("front", lambda *_: shot, "front", 6, stall_timeout_s=0.2, clock=lambda: 5.0) as cam:
        cam.read()
        with pytest.raises(CameraError, match=r"its scene's clock moved 0 s in \d+ s of wall time without a "
                                              r"new frame: has the simulation stopped"):
            cam.read()
