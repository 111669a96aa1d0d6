"""Policy checkpoint folders: round trip without the trainer, refusal of tampered, unknown and old files."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
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
    read_parts,
    recover,
    remove_checkpoint,
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
    targets (the default), which would send the arm towards 0 rad."""
    policy = make_policy()
    ckpt = save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts())
    config = json.loads((ckpt / "config.json").read_text())
    del config["policy"]["action_space"]
    (ckpt / "config.json").write_text(json.dumps(config))
    assert from_pretrained(ckpt)[0].action_space == "delta"
    assert from_pretrained(save_pretrained(tmp_path / "new", policy.state_dict(), policy.normalizer, parts())
                           )[0].action_space == "absolute"


def _save(directory: Path, step: int, seed: int = 0) -> None:
    policy = make_policy(seed)
    save_pretrained(directory, policy.state_dict(), policy.normalizer, parts(step), {"step": step})


def _filesystem_events(monkeypatch: pytest.MonkeyPatch, on_event: Callable[[str], None]) -> None:
    """Call ``on_event(name)`` before every filesystem step of a checkpoint save."""
    import s2robot.policy.checkpoint as ckpt

    def hook(name: str, fn: Callable) -> Callable:
        def wrapped(*args: object, **kwargs: object) -> object:
            on_event(name)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(ckpt.tempfile, "mkdtemp", hook("mkdtemp", tempfile.mkdtemp))
    monkeypatch.setattr(ckpt.os, "replace", hook("replace", os.replace))
    monkeypatch.setattr(ckpt.shutil, "rmtree", hook("rmtree", shutil.rmtree))
    monkeypatch.setattr(ckpt.torch, "save", hook("torch.save", torch.save))
    monkeypatch.setattr(Path, "write_text", hook("write_text", Path.write_text))


def _killer(k: int) -> Callable[[str], None]:
    """An event hook that kills this process (exit status 9, no cleanup) at its ``k``-th call."""
    count = iter(range(10**6))
    return lambda _: os._exit(9) if next(count) == k else None


def test_a_kill_at_any_point_of_the_swap_keeps_the_newest_complete_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process killed (no cleanup runs) before each filesystem step of a save: recovery then leaves the old
    checkpoint (killed before the new one was complete) or the new one (after), nothing half-written, no swap
    folder, and a user's files beside it untouched."""
    events: list[str] = []
    _filesystem_events(monkeypatch, events.append)
    _save(tmp_path / "probe" / "last", 5)
    events.clear()
    _save(tmp_path / "probe" / "last", 7)  # the steps of a save over an existing checkpoint
    steps = events[:]
    assert steps[-1] == "rmtree" and steps.count("replace") == 2 and steps.count("mkdtemp") == 2
    complete_at = max(i for i, e in enumerate(steps) if e == "write_text") + 1  # config.json written: new complete
    monkeypatch.undo()
    for k in range(len(steps) + 1):
        run = tmp_path / f"kill{k}"
        _save(run / "last", 5)
        for name in ("last.tmp", "last.old"):  # a user's folders with the names older versions used
            (run / name).mkdir()
            (run / name / "notes.txt").write_text("mine")
        pid = os.fork()
        if pid == 0:  # the child saves step 7 and dies before filesystem step k
            try:
                _filesystem_events(monkeypatch, _killer(k))
                _save(run / "last", 7)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == (9 if k < len(steps) else 0), k
        recover(run / "last")
        got = read_parts(run / "last")["config"]["step"]
        assert got == (7 if k >= complete_at else 5), (k, steps[:k])
        assert sorted(p.name for p in run.iterdir()) == ["last", "last.old", "last.tmp"], k
        assert all((run / n / "notes.txt").read_text() == "mine" for n in ("last.old", "last.tmp"))
        loaded, _ = from_pretrained(run / "last")  # complete: the weights load
        assert not loaded.training


def test_a_folder_of_user_files_is_never_replaced_or_deleted(tmp_path: Path) -> None:
    notes = tmp_path / "my_notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "paper.tex").write_text("\\section{}")
    (notes / "sub" / "data.csv").write_text("1,2")
    with pytest.raises(FileExistsError, match=r"paper\.tex.*Nothing was changed"):
        _save(notes, 3)
    with pytest.raises(FileExistsError, match=r"paper\.tex"):
        remove_checkpoint(notes)
    _save(tmp_path / "ckpt", 3)
    (tmp_path / "ckpt" / "README.md").write_text("my notes about this run")  # a user file inside a checkpoint
    with pytest.raises(FileExistsError, match=r"README\.md"):
        _save(tmp_path / "ckpt", 4)
    with pytest.raises(FileExistsError, match=r"README\.md"):
        remove_checkpoint(tmp_path / "ckpt")
    assert (notes / "paper.tex").exists() and (notes / "sub" / "data.csv").read_text() == "1,2"
    assert read_parts(tmp_path / "ckpt")["config"]["step"] == 3 and (tmp_path / "ckpt" / "README.md").exists()


def test_convert_writes_only_a_new_folder(tmp_path: Path) -> None:
    from s2robot.workflows.checkpoint import main

    policy = make_policy()
    old = {"kind": LEGACY_KIND, "version": 1, "step": 7, "model": policy.state_dict(), "ema": None,
           "optimizer": {}, "scheduler": {}, "rng": {}, "config": {"name": "old", "policy": CFG.__dict__,
                                                                   "encoder": {}, "env": {}},
           "policy_shape": SHAPE, "encoder_fingerprint": "abc", "best": None, "wandb_id": None}
    torch.save(old, tmp_path / "last.pt")
    notes = tmp_path / "my_notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "paper.tex").write_text("x")
    (notes / "sub" / "data.csv").write_text("1,2")
    assert main(["convert", str(tmp_path / "last.pt"), "--out", str(notes)]) == 2
    assert sorted(p.name for p in notes.rglob("*")) == ["data.csv", "paper.tex", "sub"]
    _save(tmp_path / "last", 5000)  # a newer checkpoint where convert would write by default
    assert main(["convert", str(tmp_path / "last.pt")]) == 2
    assert read_parts(tmp_path / "last")["config"]["step"] == 5000
    assert main(["convert", str(tmp_path / "last.pt"), "--out", str(tmp_path / "converted")]) == 0
    assert read_parts(tmp_path / "converted")["config"]["step"] == 7


def test_legacy_backup_names_are_recovered_by_renaming(tmp_path: Path) -> None:
    """A crash of an older s2robot between its two renames left ``last.old`` and no ``last``."""
    _save(tmp_path / "last", 5)
    os.replace(tmp_path / "last", tmp_path / "last.old")
    with pytest.raises(FileNotFoundError):
        read_parts(tmp_path / "last")
    assert recover(tmp_path / "last") == [f"recovered {tmp_path / 'last'} from last.old, left by an interrupted save"]
    assert read_parts(tmp_path / "last")["config"]["step"] == 5 and not (tmp_path / "last.old").exists()
    assert recover(tmp_path / "last") == []
