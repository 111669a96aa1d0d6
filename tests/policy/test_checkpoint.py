"""Policy checkpoint folders: round trip without the trainer, refusal of tampered, unknown and old files."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from s2robot.data.normalize import Normalizer
from s2robot.policy.checkpoint import (
    FORMAT_VERSION,
    LEGACY_KIND,
    WEIGHTS,
    build_policy,
    convert_legacy,
    from_pretrained,
    load_training_state,
    save_pretrained,
)
from s2robot.policy.configuration import PolicyConfig

SHAPE = {"feature_dims": {"feat_front": 12}, "proprio_dim": 8, "action_dim": 8}
CFG = PolicyConfig(d_model=32, n_layers=1, n_heads=2, ff_mult=2, dropout=0.0)


def make_policy(seed: int = 0) -> torch.nn.Module:
    rng = np.random.default_rng(seed)
    norm = Normalizer.fit({"proprio": rng.normal(size=(32, 8)), "action": rng.normal(size=(32, 8)),
                           "feat_front": rng.normal(size=(32, 12))})
    torch.manual_seed(seed)
    return build_policy(CFG, SHAPE, norm).eval()


def parts(step: int = 3) -> dict[str, dict]:
    return {"config": {"policy": CFG.__dict__, "shape": SHAPE, "step": step, "ema": False,
                       "encoder_fingerprint": "abc", "run": {"name": "t"}},
            "encoder": {"config": {"variant": "vit-micro"}, "fingerprint": "abc"}, "env": {"image_size": 32}}


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"feat_front": torch.randn(2, 16, 12, generator=g), "proprio": torch.randn(2, 16, 8, generator=g),
            "prev_action": torch.randn(2, 16, 8, generator=g), "obs_is_pad": torch.zeros(2, 16, dtype=torch.bool),
            "prev_action_is_pad": torch.zeros(2, 16, dtype=torch.bool)}


def test_round_trip_loads_the_same_policy_without_the_trainer(tmp_path: Path) -> None:
    policy = make_policy()
    state = {"optimizer": {"lr": 0.1}, "step": 3, "rng": {"torch": torch.get_rng_state()}}
    save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts(), state)
    loaded, got = from_pretrained(tmp_path / "ckpt")
    assert not loaded.training and got["config"]["format_version"] == FORMAT_VERSION
    assert got["encoder"]["fingerprint"] == "abc" and got["env"] == {"image_size": 32}
    for k, v in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k  # normalizer stats exact through JSON
    torch.testing.assert_close(loaded.predict_chunk(batch()), policy.predict_chunk(batch()), rtol=0, atol=0)
    assert load_training_state(tmp_path / "ckpt")["step"] == 3
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(
        ["config.json", "encoder.json", "env.json", "normalizer.json", WEIGHTS, "training_state.pt"])
    save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts(step=4))  # replaces it
    assert from_pretrained(tmp_path / "ckpt")[1]["config"]["step"] == 4


class Payload:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch PWNED",))


def test_tampered_weights_are_refused_and_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = make_policy()
    ckpt = save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts())
    with open(ckpt / WEIGHTS, "wb") as f:
        pickle.dump({"weight": Payload()}, f, protocol=2)  # a pickle that runs a command when unpickled
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"refusing to load .*weights_only=True"):
        from_pretrained(ckpt)
    assert not (tmp_path / "PWNED").exists()


def test_unknown_format_version_and_missing_folder_are_refused(tmp_path: Path) -> None:
    policy = make_policy()
    ckpt = save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts())
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ValueError, match="format version 99; this s2robot reads version 2"):
        from_pretrained(ckpt)
    (ckpt / "config.json").write_text(json.dumps({**config, "format": "something.else"}))
    with pytest.raises(ValueError, match="not an s2robot policy checkpoint"):
        from_pretrained(ckpt)
    with pytest.raises(FileNotFoundError, match=r"train one with scripts/train_bc.py"):
        from_pretrained(tmp_path / "nothing")


def test_old_single_file_checkpoint_is_refused_then_converted(tmp_path: Path) -> None:
    policy = make_policy()
    train_config = {"name": "old", "seed": 0, "policy": CFG.__dict__, "encoder": {"variant": "vit-micro"},
                    "env": {"image_size": 32}}
    old = {"kind": LEGACY_KIND, "version": 1, "step": 7, "model": policy.state_dict(), "ema": None,
           "optimizer": {}, "scheduler": {}, "rng": {"torch": torch.get_rng_state()}, "config": train_config,
           "policy_shape": SHAPE, "encoder_fingerprint": "abc", "weights_random": True, "cache": None,
           "best": None, "wandb_id": None, "torch": torch.__version__}
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    torch.save(old, path)
    with pytest.raises(ValueError, match=r"Convert it with: python -m s2robot.workflows.checkpoint convert"):
        from_pretrained(path)
    folder = convert_legacy(path)
    assert folder == tmp_path / "checkpoints" / "last"
    loaded, got = from_pretrained(folder)
    assert got["config"]["step"] == 7 and got["encoder"]["config"] == {"variant": "vit-micro"}
    torch.testing.assert_close(loaded.predict_chunk(batch()), policy.predict_chunk(batch()), rtol=0, atol=0)


def test_a_checkpoint_from_before_action_spaces_is_a_delta_policy(tmp_path: Path) -> None:
    """Policies trained before ``action_space`` existed learned joint deltas: loading one must not run it as absolute
    targets (the new default), which would send the arm towards 0 rad."""
    policy = make_policy()
    ckpt = save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts())
    config = json.loads((ckpt / "config.json").read_text())
    del config["policy"]["action_space"]
    (ckpt / "config.json").write_text(json.dumps(config))
    assert from_pretrained(ckpt)[0].action_space == "delta"
    assert from_pretrained(save_pretrained(tmp_path / "new", policy.state_dict(), policy.normalizer, parts())
                           )[0].action_space == "absolute"
