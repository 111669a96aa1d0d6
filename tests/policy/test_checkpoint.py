"""Policy checkpoint folders: round trip without the trainer, refusal of tampered, unknown and old files, format-2
folders, crash-safe swaps, and loading by Hugging Face Hub repo id from an offline cache."""

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
from safetensors.torch import load_file

from s2robot.data.normalize import Normalizer
from s2robot.policy.checkpoint import (
    FORMAT_VERSION,
    LEGACY_KIND,
    WEIGHTS,
    WEIGHTS_V2,
    build_policy,
    foreign_files,
    from_pretrained,
    load_training_state,
    read_parts,
    recover,
    remove_checkpoint,
    save_pretrained,
)
from s2robot.policy.configuration import PolicyConfig
from s2robot.policy.convert import convert_folder, convert_legacy

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
        ["config.json", "encoder.json", "env.json", "normalizer.json", "model.safetensors", "README.md",
         "training_state.pt"])
    stored = load_file(tmp_path / "ckpt" / WEIGHTS)  # the deployable weights, bit for bit, without the normalizer
    expected = {k: v for k, v in policy.state_dict().items() if not k.startswith("normalizer.")}
    assert stored.keys() == expected.keys() and all(torch.equal(stored[k], v) for k, v in expected.items())
    save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts(step=4))  # replaces it
    assert from_pretrained(tmp_path / "ckpt")[1]["config"]["step"] == 4


class Payload:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch PWNED",))


def _pickle_bomb(path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"weight": Payload()}, f, protocol=2)  # a pickle that runs a command when unpickled


def _drop_weights_record(ckpt: Path) -> None:
    """Forget the digest config.json keeps of model.safetensors: the file alone has to be judged."""
    config = json.loads((ckpt / "config.json").read_text())
    del config["weights_file"]
    (ckpt / "config.json").write_text(json.dumps(config))


def test_tampered_weights_are_refused_and_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = make_policy()
    ckpt = save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts(), {"step": 3})
    monkeypatch.chdir(tmp_path)
    _pickle_bomb(ckpt / WEIGHTS)
    with pytest.raises(ValueError, match=r"model\.safetensors is not the file its config\.json records"):
        from_pretrained(ckpt)
    _drop_weights_record(ckpt)
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
        from_pretrained(ckpt)
    _pickle_bomb(ckpt / "training_state.pt")  # the resume file stays a torch file: read weights_only=True
    with pytest.raises(ValueError, match=r"refusing to load .*training_state\.pt.*weights_only=True"):
        load_training_state(ckpt)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_or_altered_safetensors_are_refused_naming_the_file(tmp_path: Path) -> None:
    policy = make_policy()
    ckpt = save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts())
    good = (ckpt / WEIGHTS).read_bytes()
    flipped = bytearray(good)
    flipped[-1] ^= 0x01  # one bit of the last weight: still valid safetensors, another number
    (ckpt / WEIGHTS).write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=rf"{ckpt / WEIGHTS} is not the file its config\.json records .*truncated "
                                         r"or changed"):
        from_pretrained(ckpt)
    (ckpt / WEIGHTS).write_bytes(good[:-100])
    with pytest.raises(ValueError, match=rf"{ckpt / WEIGHTS} is not the file"):
        from_pretrained(ckpt)
    _drop_weights_record(ckpt)
    with pytest.raises(ValueError, match=rf"{ckpt / WEIGHTS} is not a readable safetensors file \(.*\): it is "
                                         "truncated"):
        from_pretrained(ckpt)
    (ckpt / WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        from_pretrained(ckpt)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    policy = make_policy()
    ckpt = save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts())
    wider = build_policy(PolicyConfig(d_model=48, n_layers=1, n_heads=2, ff_mult=2, dropout=0.0), SHAPE,
                         policy.normalizer)
    save_pretrained(tmp_path / "wide", wider.state_dict(), policy.normalizer, parts())
    shutil.copy(tmp_path / "wide" / WEIGHTS, ckpt / WEIGHTS)
    _drop_weights_record(ckpt)
    with pytest.raises(ValueError, match=r"model\.safetensors does not fit the policy of its config\.json: .*shapes "
                                         r"\(file, config\) \{'time_embed': \(\(16, 48\), \(16, 32\)\)"):
        from_pretrained(ckpt)


def test_unknown_format_version_and_missing_folder_are_refused(tmp_path: Path) -> None:
    policy = make_policy()
    ckpt = save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts())
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ValueError, match="format version 99; this s2robot reads versions 2, 3"):
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
    monkeypatch.setattr(Path, "write_bytes", hook("write_bytes", Path.write_bytes))  # model.safetensors


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
    assert steps.count("write_bytes") == 1 and steps.count("write_text") == 5  # 3 parts, README.md, config.json
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
    (tmp_path / "ckpt" / "notes.md").write_text("my notes about this run")  # a user file inside a checkpoint
    with pytest.raises(FileExistsError, match=r"notes\.md"):
        _save(tmp_path / "ckpt", 4)
    with pytest.raises(FileExistsError, match=r"notes\.md"):
        remove_checkpoint(tmp_path / "ckpt")
    assert (notes / "paper.tex").exists() and (notes / "sub" / "data.csv").read_text() == "1,2"
    assert read_parts(tmp_path / "ckpt")["config"]["step"] == 3 and (tmp_path / "ckpt" / "notes.md").exists()


def test_the_card_and_its_update_leftover_are_a_checkpoints_own_files(tmp_path: Path) -> None:
    """README.md is the model card (rewritten by every save); a temporary file a crashed card update left is ours."""
    _save(tmp_path / "ckpt", 3)
    (tmp_path / "ckpt" / ".README.md.tmp-k2j4").write_text("half a card")
    assert foreign_files(tmp_path / "ckpt") == []
    _save(tmp_path / "ckpt", 4)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(
        ["config.json", "encoder.json", "env.json", "normalizer.json", WEIGHTS, "README.md", "training_state.pt"])


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


def _make_v2(ckpt: Path) -> None:
    """Turn a checkpoint folder into the format-2 layout: weights in model.pt (a torch state dict), no model card."""
    torch.save(load_file(ckpt / WEIGHTS), ckpt / WEIGHTS_V2)
    (ckpt / WEIGHTS).unlink()
    (ckpt / "README.md").unlink()
    config = json.loads((ckpt / "config.json").read_text())
    del config["weights_file"]
    (ckpt / "config.json").write_text(json.dumps({**config, "format_version": 2}, indent=2))


def _tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_a_format_2_folder_loads_with_a_note_and_converts_bit_equal(tmp_path: Path) -> None:
    from s2robot.workflows.checkpoint import main

    policy = make_policy()
    v2 = save_pretrained(tmp_path / "last", policy.state_dict(), policy.normalizer, parts(step=9), {"step": 9})
    _make_v2(v2)
    before = _tree(v2)
    with pytest.warns(UserWarning, match=rf"format-2 checkpoint .*convert it to format 3 with: python -m "
                                         rf"s2robot.workflows.checkpoint convert {v2} --out NEW_FOLDER"):
        loaded, got = from_pretrained(v2)
    assert got["config"]["format_version"] == 2
    torch.testing.assert_close(loaded.predict_chunk(batch()), policy.predict_chunk(batch()), rtol=0, atol=0)
    _pickle_bomb(tmp_path / "bomb.pt")  # the v2 weights file is read weights_only=True too
    with pytest.raises(ValueError, match=r"refusing to load .*weights_only=True"):
        convert_legacy(tmp_path / "bomb.pt", tmp_path / "never")

    assert main(["convert", str(v2), "--out", str(tmp_path / "v3")]) == 0
    assert main(["convert", str(v2), "--out", str(tmp_path / "v3")]) == 2  # an existing folder is never replaced
    assert _tree(v2) == before  # the old folder was only read
    v3, v3_parts = from_pretrained(tmp_path / "v3")
    assert v3_parts["config"]["format_version"] == FORMAT_VERSION and v3_parts["config"]["converted_from"] == str(v2)
    old = torch.load(v2 / WEIGHTS_V2, weights_only=True)
    new = load_file(tmp_path / "v3" / WEIGHTS)
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    assert all(torch.equal(v, v3.state_dict()[k]) for k, v in policy.state_dict().items())
    assert load_training_state(tmp_path / "v3")["step"] == 9 and (tmp_path / "v3" / "README.md").is_file()
    assert convert_folder(v2) == tmp_path / "last-v3"  # the default: beside it
    with pytest.raises(ValueError, match="format-3 checkpoint, not format 2: nothing to convert"):
        convert_folder(tmp_path / "v3", tmp_path / "v4")


def _fake_hub_cache(cache: Path, repo_id: str, folder: Path, revision: str) -> Path:
    """``folder`` as huggingface_hub caches a downloaded model repo: blobs by digest, a snapshot of links to them,
    and refs/main naming the snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for f in ("config.json", "encoder.json", "env.json", "normalizer.json", WEIGHTS, "README.md"):
        import hashlib

        blob = repo / "blobs" / hashlib.sha256((folder / f).read_bytes()).hexdigest()
        shutil.copy(folder / f, blob)
        (snapshot / f).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_a_hub_repo_id_loads_from_the_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub import constants, hf_hub_download

    policy = make_policy()
    ckpt = save_pretrained(tmp_path / "ckpt", policy.state_dict(), policy.normalizer, parts(), {"step": 3})
    assert {constants.CONFIG_NAME, constants.SAFETENSORS_SINGLE_FILE, constants.REPOCARD_NAME} <= {
        p.name for p in ckpt.iterdir()}  # what huggingface_hub's conventions look for, at the top of the folder
    revision = "a" * 40
    cache = tmp_path / "hf"
    _fake_hub_cache(cache, "lab/cube-pick", ckpt, revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read once at import; the env var is for subprocesses
    config = json.loads(Path(hf_hub_download("lab/cube-pick", "config.json", local_files_only=True)).read_text())
    assert config["format"] == "s2robot.policy" and config["weights_file"]["file"] == WEIGHTS
    assert huggingface_hub.ModelCard.load(ckpt / "README.md").data.library_name == "s2robot"
    monkeypatch.chdir(tmp_path)  # no folder named like the repo here
    for kw in ({}, {"revision": revision}):
        loaded, got = from_pretrained("lab/cube-pick", **kw)
        assert got["config"]["step"] == 3
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in policy.state_dict().items())
    with pytest.raises(FileNotFoundError, match=r"no Hugging Face Hub repo 'lab/other' in the local cache .*hf "
                                                r"download lab/other"):
        from_pretrained("lab/other")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*runs/x/last .*train one"):
        from_pretrained("runs/x/last")  # a path, never a repo id
