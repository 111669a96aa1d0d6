"""Older checkpoint formats to the current one: each conversion reads the old checkpoint (``weights_only=True``) and
writes a new folder, replacing nothing.

``python -m s2robot.workflows.checkpoint convert PATH`` runs them: ``convert_legacy`` for the single-file ``last.pt``
of format version 1, ``convert_folder`` for a format-2 folder (``model.pt``).
"""

from __future__ import annotations

from pathlib import Path

from torch.torch_version import TorchVersion

from s2robot.data.normalize import Normalizer
from s2robot.policy.checkpoint import (
    FORMAT_VERSION,
    LEGACY_KIND,
    TRAINING_STATE,
    WEIGHTS_V2,
    load_tensors,
    normalizer_from_json,
    read_parts,
    save_pretrained,
)


def _refuse_existing(target: Path) -> None:
    if target.exists() or target.is_symlink():
        raise FileExistsError(f"{target} already exists; convert writes a new checkpoint folder and replaces nothing "
                              "(a newer checkpoint or a user's files may be there). Pass --out with a new folder")


def convert_legacy(path: str | Path, out: str | Path | None = None) -> Path:
    """Convert a format-1 ``last.pt``/``best.pt`` to a checkpoint folder (default: beside it, without ``.pt``).

    The old file is read with ``weights_only=True`` too: one that needs arbitrary unpickling is refused.
    """
    path = Path(path)
    target = Path(out) if out else path.with_suffix("")
    _refuse_existing(target)
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


def convert_folder(path: str | Path, out: str | Path | None = None) -> Path:
    """Convert a format-2 checkpoint folder (weights in ``model.pt``) to a new format-3 folder (default: beside it,
    ``<name>-v3``) with the same weights, parts and training state, and a model card; the old folder is only read."""
    path = Path(path)
    target = Path(out) if out else path.with_name(path.name + "-v3")
    _refuse_existing(target)
    parts = read_parts(path)
    version = parts["config"].get("format_version")
    if version != 2:
        raise ValueError(f"{path} is a format-{version} checkpoint, not format 2: nothing to convert (this s2robot "
                         f"writes format {FORMAT_VERSION})")
    weights = load_tensors(path / WEIGHTS_V2)
    state = load_tensors(path / TRAINING_STATE) if (path / TRAINING_STATE).is_file() else None
    config = {**parts["config"], "converted_from": str(path)}
    return save_pretrained(target, weights, normalizer_from_json(parts["normalizer"]), {**parts, "config": config},
                           state)
