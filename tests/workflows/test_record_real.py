"""Recording on the Franka env in franky-sim: the same store as the simulated env's, and a camera stall mid-run."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("franky")
pytest.importorskip("franky_sim")

from s2robot.data.store import EpisodeStore
from s2robot.data.verify import verify_path
from s2robot.real.camera import CameraError, MujocoCamera
from s2robot.real.env import FrankaEnv
from s2robot.sim.env import EnvConfig
from s2robot.workflows.record import RecordConfig, record_demos

STALL_AFTER = 5  # camera reads into the second episode before the camera stops delivering


def test_record_on_arm_matches_sim_store_and_keeps_episodes_before_a_stall(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recording on the arm writes the simulated env's keys, shapes and dtypes with loop timing per episode; a
    camera stall in episode 2 makes record_demos raise and leaves episode 1 stored and verifiable."""
    sim_out = record_demos(RecordConfig(env=EnvConfig(cameras=["front"], image_size=32), out=str(tmp_path / "s.zarr"),
                                        n_episodes=1, workers=1, tail_steps=2), progress=False)

    resets = {"n": 0, "reads": 0}
    reset, read = FrankaEnv.reset, MujocoCamera.read

    def counting_reset(self: FrankaEnv, **kw: object) -> object:
        resets["n"] += 1
        resets["reads"] = 0
        return reset(self, **kw)

    def stalling_read(self: MujocoCamera) -> object:
        resets["reads"] += 1
        if resets["n"] >= 2 and resets["reads"] > STALL_AFTER:
            raise CameraError(f"camera {self.name!r} ({self.source}) delivered no new frame for 1 s")
        return read(self)

    monkeypatch.setattr(FrankaEnv, "reset", counting_reset)
    monkeypatch.setattr(MujocoCamera, "read", stalling_read)
    arm_out = tmp_path / "d.zarr"
    env = EnvConfig(id="s2robot/FrankaReal-v0", cameras=["front"], image_size=32, max_steps=80,
                    options={"host": "franky-sim"})
    with pytest.raises(CameraError, match="no new frame"):
        record_demos(RecordConfig(env=env, out=str(arm_out), n_episodes=2, workers=1, tail_steps=2,
                                  keep_failures=True), progress=False)  # the test is of the store, not the pick
    assert resets["n"] == 2  # the stall came in the second episode

    arm, sim = EpisodeStore.open(arm_out), EpisodeStore.open(sim_out)
    assert arm.n_episodes == 1 and sim.n_episodes == 1
    assert arm.keys == sim.keys
    for key in sim.keys:
        assert arm.spec(key) == sim.spec(key), key  # dtype and per-step shape
    info = arm.episode_info(0)
    assert info["timing"]["steps"] == arm.n_steps - 1  # the last step's action is never sent
    assert "missed_deadlines" in info["timing"]
    assert verify_path(arm_out) == []
