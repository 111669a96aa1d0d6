"""Policy checkpoints: a folder that loads a policy without the trainer, and the training state beside it.

Layout of one checkpoint folder (e.g. ``runs/<name>/checkpoints/last/``)::

    config.json          format, format_version, policy config, data shape, step, provenance of the run
    encoder.json         the frozen encoder's config and fingerprint (the features the policy reads)
    env.json             the environment config of the training demos
    normalizer.json      per key: offset and scale of the policy's input/output normalization
    model.pt             policy weights (a plain state dict without the normalizer), EMA when trained with it
    training_state.pt    resume only: raw weights, EMA, optimizer, scheduler, RNG states, step, run config

Every ``.pt`` file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a file
that carries code (a pickled ``__reduce__`` payload) is refused, never run. ``safetensors`` is not a
dependency of this project, hence ``.pt`` state dicts. The single-file ``last.pt`` of format version 1 is refused
with the command that converts it (``convert_legacy``).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.torch_version import TorchVersion

from s2robot.data.normalize import Normalizer
from s2robot.policy.configuration import PolicyConfig
from s2robot.policy.modeling import ChunkTransformerPolicy

FORMAT = "s2robot.policy"
FORMAT_VERSION = 2
LEGACY_KIND = "s2robot.BCCheckpoint"  # format version 1: one pickled dict per file (last.pt)
PARTS = ("config", "encoder", "env", "normalizer")
WEIGHTS, TRAINING_STATE = "model.pt", "training_state.pt"
CONVERT = "python -m s2robot.workflows.checkpoint convert"


def build_policy(cfg: PolicyConfig, shape: Mapping[str, Any], normalizer: Normalizer | None = None
                 ) -> ChunkTransformerPolicy:
    """A policy for ``shape`` = {feature_dims, proprio_dim, action_dim} (as stored in ``config.json``)."""
    return ChunkTransformerPolicy(cfg, shape["feature_dims"], shape["proprio_dim"], shape["action_dim"],
                                  normalizer)


def normalizer_to_json(normalizer: Normalizer) -> dict[str, dict[str, list[float]]]:
    """{key: {"offset": [...], "scale": [...]}}; float32 values survive the JSON round trip exactly."""
    return {k: {"offset": a.offset.tolist(), "scale": a.scale.tolist()} for k, a in normalizer.stats.items()}


def normalizer_from_json(d: Mapping[str, Mapping[str, list[float]]]) -> Normalizer:
    return Normalizer({k: (torch.tensor(v["offset"]), torch.tensor(v["scale"])) for k, v in d.items()})


def _weights_only(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items() if not k.startswith("normalizer.")}


CHECKPOINT_FILES = frozenset({*(f"{name}.json" for name in PARTS), WEIGHTS, TRAINING_STATE})
_TMP, _OLD = "tmp", "old"  # roles of the unique folders beside a checkpoint while it is swapped


def foreign_files(directory: Path) -> list[str]:
    """What in ``directory`` is not a checkpoint folder's own (names other than ``CHECKPOINT_FILES``, subfolders,
    links); [] for a folder that holds a checkpoint's files and nothing else. A folder that is not one is never
    deleted or replaced: it may hold a user's notes."""
    if directory.is_symlink() or not directory.is_dir():
        return [directory.name]
    return sorted(c.name + ("/" if c.is_dir() else "") for c in directory.iterdir()
                  if c.name not in CHECKPOINT_FILES or c.is_symlink() or not c.is_file())


def _is_complete(directory: Path) -> bool:
    """Whether a checkpoint folder was written to the end: ``config.json`` is written last (see ``save_pretrained``),
    so a folder with it, every other part and the weights is complete."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(config, dict) and config.get("format") == FORMAT and (directory / WEIGHTS).is_file()
            and all((directory / f"{name}.json").is_file() for name in PARTS))


def _swap_folders(directory: Path) -> list[tuple[str, Path]]:
    """The ``(role, path)`` of the unique temporary (``.<name>.tmp-*``) and backup (``.<name>.old-*``) folders a
    save of ``directory`` creates beside it (see ``save_pretrained``)."""
    found = []
    for role in (_TMP, _OLD):
        found += [(role, p) for p in sorted(directory.parent.glob(f".{directory.name}.{role}-*")) if p.is_dir()]
    return found


def recover(directory: str | Path) -> list[str]:
    """Finish or undo a checkpoint swap that a crash interrupted; returns what was done, one line each ([] when
    nothing was left over).

    ``save_pretrained`` writes a complete new folder, then renames the current one to a backup, the new one into
    place, and deletes the backup. A crash at any point leaves ``directory`` and/or a complete new folder and/or
    the backup; the newest complete one becomes ``directory`` (a complete new folder is newer than ``directory``,
    which is newer than its backup), and the others, and any half-written one, are deleted. Only folders that
    hold nothing but a checkpoint's files are touched. The fixed names ``<name>.tmp``/``<name>.old`` of older
    s2robot versions are used only when ``directory`` is missing, by renaming (nothing is deleted).
    """
    directory = Path(directory)
    notes: list[str] = []
    ours = [(role, p) for role, p in _swap_folders(directory) if not foreign_files(p)]

    def newest(paths: list[Path]) -> Path | None:
        return max(paths, key=lambda p: (p / "config.json").stat().st_mtime_ns, default=None)

    keep = newest([p for role, p in ours if role == _TMP and _is_complete(p)])
    if keep is None and not directory.exists():
        keep = newest([p for role, p in ours if role == _OLD and _is_complete(p)])
    if keep is not None:
        if directory.exists():  # an older complete checkpoint (or a half-deleted one of ours): make way
            if foreign_files(directory):
                raise FileExistsError(f"{directory} holds files that are not a checkpoint's "
                                      f"({foreign_files(directory)}); the newer checkpoint {keep} was left beside it")
            shutil.rmtree(directory)
        os.replace(keep, directory)
        notes.append(f"recovered {directory} from {keep.name}, the newest complete checkpoint an interrupted save "
                     "left")
    for _, p in ours:
        if p != keep and p.exists():
            state = "older" if _is_complete(p) else "half-written"
            shutil.rmtree(p)
            notes.append(f"deleted {p.name}, a {state} checkpoint left by an interrupted save")
    if not directory.exists():
        for legacy in (directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")):
            if legacy.is_dir() and not foreign_files(legacy) and _is_complete(legacy):
                os.replace(legacy, directory)
                notes.append(f"recovered {directory} from {legacy.name}, left by an interrupted save")
                break
    return notes


def save_pretrained(directory: str | Path, weights: Mapping[str, torch.Tensor], normalizer: Normalizer,
                    parts: Mapping[str, Mapping[str, Any]], training_state: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically: a crash at any point keeps the previous one or the new one, complete
    (``recover`` tidies what the crash left; it runs first here too).

    weights: the policy's state dict to deploy; parts: ``config`` (policy, shape, step, ...), ``encoder`` and
    ``env`` dicts (JSON-able); training_state: what a resume needs (tensors and plain containers). An existing
    ``directory`` is replaced only when it holds a checkpoint's files and nothing else; the temporary and backup
    folders are new, uniquely named ones beside it, so no other file is ever touched.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    recover(directory)
    if directory.exists() and (foreign := foreign_files(directory)):
        raise FileExistsError(f"refusing to replace {directory}: it holds {foreign}, which are not a checkpoint's "
                              "files. Nothing was changed; write the checkpoint elsewhere or move those files")
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.{_TMP}-", dir=directory.parent))
    torch.save(_weights_only(weights), tmp / WEIGHTS)
    if training_state is not None:
        torch.save(dict(training_state), tmp / TRAINING_STATE)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, **parts["config"]}
    contents = {"encoder": parts["encoder"], "env": parts["env"], "normalizer": normalizer_to_json(normalizer),
                "config": config}  # config.json last: its presence marks the folder complete
    for name, value in contents.items():
        (tmp / f"{name}.json").write_text(json.dumps(value, indent=2) + "\n")
    old = None
    if directory.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.{_OLD}-", dir=directory.parent))
        os.replace(directory, old)  # onto the empty backup folder: rename(2) replaces an empty directory
    os.replace(tmp, directory)
    if old is not None:
        shutil.rmtree(old)
    return directory


def remove_checkpoint(directory: str | Path) -> None:
    """Delete a checkpoint folder (``overwrite=true``), refusing one that holds anything but a checkpoint's files."""
    directory = Path(directory)
    if not directory.exists() and not directory.is_symlink():
        return
    if foreign := foreign_files(directory):
        raise FileExistsError(f"refusing to delete {directory}: it holds {foreign}, which are not a checkpoint's "
                              "files. Nothing was deleted; move them out, or pick another name=")
    shutil.rmtree(directory)


def _refuse_legacy(path: Path) -> None:
    if path.is_file():
        raise ValueError(f"{path} is a single-file checkpoint (format version 1, from before s2robot 0.2); this "
                         f"s2robot reads checkpoint folders (format version {FORMAT_VERSION}). Convert it with: "
                         f"{CONVERT} {path}")


def read_parts(directory: str | Path) -> dict[str, dict[str, Any]]:
    """The JSON parts of a checkpoint folder, checked to be of this format and version."""
    directory = Path(directory)
    _refuse_legacy(directory)
    if not (directory / "config.json").is_file():
        left = [p.name for _, p in _swap_folders(directory) if _is_complete(p)]
        hint = (f"; an interrupted save left {left} beside it: python -m s2robot.workflows.checkpoint recover "
                f"{directory} (or re-running the training) restores it" if left else "")
        raise FileNotFoundError(f"no checkpoint at {directory} (no config.json there); train one with "
                                f"scripts/train_bc.py{hint}")
    parts = {name: json.loads((directory / f"{name}.json").read_text()) for name in PARTS}
    config = parts["config"]
    if config.get("format") != FORMAT:
        raise ValueError(f"{directory} is not an s2robot policy checkpoint (format {config.get('format')!r}, "
                         f"expected {FORMAT!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory} has checkpoint format version {config.get('format_version')!r}; this "
                         f"s2robot reads version {FORMAT_VERSION}: use the s2robot version that wrote it")
    return parts


def load_tensors(path: Path, map_location: str | torch.device = "cpu", allow: tuple[type, ...] = ()) -> dict[str, Any]:
    """A ``.pt`` file read with ``weights_only=True``: a file holding anything but tensors and plain
    containers (e.g. pickled code) is refused with a clear error. ``allow``: plain-data classes to accept too."""
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as e:
        raise ValueError(f"refusing to load {path}: it is not a plain tensor file readable with "
                         f"weights_only=True (tampered or not an s2robot checkpoint): {e}") from None


def load_training_state(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """What a resume needs (see the module docstring), from ``training_state.pt``."""
    directory = Path(directory)
    read_parts(directory)
    return load_tensors(directory / TRAINING_STATE, map_location)


def from_pretrained(directory: str | Path, device: str | torch.device = "cpu", use_ema: bool = True
                    ) -> tuple[ChunkTransformerPolicy, dict[str, dict[str, Any]]]:
    """The policy of a checkpoint folder in eval mode, and its JSON parts (config, encoder, env, normalizer).

    use_ema=False loads the raw (non-EMA) weights of a run trained with EMA, from its training state.
    """
    directory = Path(directory)
    parts = read_parts(directory)
    config = parts["config"]
    state = load_tensors(directory / WEIGHTS)
    if config.get("ema") and not use_ema:
        state = _weights_only(load_training_state(directory)["model"])
    saved = {"action_space": "delta", **config["policy"]}  # checkpoints from before action_space learned deltas
    policy = build_policy(PolicyConfig(**saved), config["shape"], normalizer_from_json(parts["normalizer"]))
    missing, unexpected = policy.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("normalizer.")]
    if missing or unexpected:
        raise ValueError(f"{directory / WEIGHTS} does not fit the policy of its config.json: missing {missing}, "
                         f"unexpected {unexpected}")
    return policy.to(device).eval(), parts


def convert_legacy(path: str | Path, out: str | Path | None = None) -> Path:
    """Convert a format-1 ``last.pt``/``best.pt`` to a checkpoint folder (default: beside it, without ``.pt``).

    The old file is read with ``weights_only=True`` too: one that needs arbitrary unpickling is refused.
    """
    path = Path(path)
    target = Path(out) if out else path.with_suffix("")
    if target.exists() or target.is_symlink():
        raise FileExistsError(f"{target} already exists; convert writes a new checkpoint folder and replaces nothing "
                              "(a newer checkpoint or a user's files may be there). Pass --out with a new folder")
    old = load_tensors(path, allow=(TorchVersion,))  # format 1 stored torch.__version__, a str subclass
    if not isinstance(old, dict) or old.get("kind") != LEGACY_KIND:
        raise ValueError(f"{path} is not an s2robot format-1 checkpoint (kind {LEGACY_KIND!r})")
    train = dict(old["config"])
    weights = old["ema"] if old.get("ema") is not None else old["model"]
    parts = {
        "config": {"policy": train["policy"], "shape": old["policy_shape"], "step": old["step"],
                   "ema": old.get("ema") is not None, "run": {k: v for k, v in train.items()
                                                               if k not in ("policy", "encoder", "env")},
                   "encoder_fingerprint": old["encoder_fingerprint"], "weights_random": old.get("weights_random"),
                   "cache": old.get("cache"), "converted_from": str(path)},
        "encoder": {"config": train["encoder"], "fingerprint": old["encoder_fingerprint"]},
        "env": train["env"],
    }
    state = {k: old[k] for k in ("model", "ema", "optimizer", "scheduler", "rng", "step", "best", "wandb_id")}
    state["train_config"] = train
    return save_pretrained(target, weights,
                           Normalizer.from_state_dict(weights, "normalizer."), parts, state)
