"""Policy checkpoints: a folder that loads a policy without the trainer, and the training state beside it.

Layout of one checkpoint folder (e.g. ``runs/<name>/checkpoints/last/``), format version 3::

    config.json          format, format_version, policy config, data shape, step, provenance of the run, demos, and
                         the size and sha256 of model.safetensors
    encoder.json         the frozen encoder's config and fingerprint (the features the policy reads)
    env.json             the environment config of the training demos
    normalizer.json      per key: offset and scale of the policy's input/output normalization
    model.safetensors    policy weights (without the normalizer), EMA when trained with it (``policy.weights_file``)
    README.md            the model card (``policy.model_card``): encoder, demos, recipe, measured success
    training_state.pt    resume only: raw weights, EMA, optimizer, scheduler, RNG states, step, run config

It is a Hugging Face model repo as it stands (``config.json``, ``model.safetensors`` and ``README.md`` at the top),
and ``from_pretrained`` takes a repo id too (``policy.hub``). Nothing read while loading can run code: safetensors
holds only a header and tensor bytes, and every ``.pt`` file is read with ``torch.load(weights_only=True)``
(tensors and plain containers only; a pickled ``__reduce__`` payload is refused, never run). The training state
stays a ``.pt`` file: it nests optimizer and scheduler state dicts, per-rank RNG states and the run config, which
safetensors' flat name → tensor map cannot hold without a bespoke flattening, and it is never deployed or uploaded.

Format version 2 folders (weights in ``model.pt``, read with ``weights_only=True``) still load, with a note giving
the command that converts them; the single-file ``last.pt`` of format version 1 is refused with the command that
converts it (both in ``policy.convert``).
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from s2robot.common.atomic import replacing
from s2robot.data.normalize import Normalizer
from s2robot.policy.configuration import PolicyConfig
from s2robot.policy.hub import resolve_pretrained
from s2robot.policy.model_card import CARD, card_metadata, is_model_card, model_card, with_evaluation
from s2robot.policy.modeling import ChunkTransformerPolicy
from s2robot.policy.weights_file import WEIGHTS, load_weights, save_weights

FORMAT = "s2robot.policy"
FORMAT_VERSION = 3
READ_VERSIONS = (2, 3)  # 2: weights in model.pt (a state dict read with weights_only=True), no model card
LEGACY_KIND = "s2robot.BCCheckpoint"  # format version 1: one pickled dict per file (last.pt)
PARTS = ("config", "encoder", "env", "normalizer")
WEIGHTS_V2, TRAINING_STATE = "model.pt", "training_state.pt"
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


CHECKPOINT_FILES = frozenset({*(f"{name}.json" for name in PARTS), WEIGHTS, WEIGHTS_V2, CARD, TRAINING_STATE})
_CARD_TMP = f".{CARD}.tmp-"  # the unique temporary file of a model card update (``record_evaluation``)
_TMP, _OLD = "tmp", "old"  # roles of the unique folders beside a checkpoint while it is swapped


def foreign_files(directory: Path) -> list[str]:
    """What in ``directory`` is not a checkpoint folder's own (names other than ``CHECKPOINT_FILES`` and a card
    update's temporary file, subfolders, links); [] for a folder that holds a checkpoint's files and nothing else.
    A folder that is not one is never deleted or replaced: it may hold a user's notes."""
    if directory.is_symlink() or not directory.is_dir():
        return [directory.name]
    return sorted(c.name + ("/" if c.is_dir() else "") for c in directory.iterdir()
                  if not (c.name in CHECKPOINT_FILES or c.name.startswith(_CARD_TMP)) or c.is_symlink()
                  or not c.is_file())


def _is_complete(directory: Path) -> bool:
    """Whether a checkpoint folder was written to the end: ``config.json`` is written last (see ``save_pretrained``),
    so a folder with it, every other part and the weights is complete."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    weights = (directory / WEIGHTS).is_file() or (directory / WEIGHTS_V2).is_file()
    return (isinstance(config, dict) and config.get("format") == FORMAT and weights
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
    folders are new, uniquely named ones beside it, so no other file is ever touched. The new model card records
    no evaluation (the weights are new); the license of the card it replaces is kept.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    recover(directory)
    if directory.exists() and (foreign := foreign_files(directory)):
        raise FileExistsError(f"refusing to replace {directory}: it holds {foreign}, which are not a checkpoint's "
                              "files. Nothing was changed; write the checkpoint elsewhere or move those files")
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.{_TMP}-", dir=directory.parent))
    weights_file = save_weights(tmp / WEIGHTS, _weights_only(weights))
    if training_state is not None:
        torch.save(dict(training_state), tmp / TRAINING_STATE)
    own = ("format", "format_version", "weights_file")
    config = {"format": FORMAT, "format_version": FORMAT_VERSION,
              **{k: v for k, v in parts["config"].items() if k not in own}, "weights_file": weights_file}
    contents = {"encoder": parts["encoder"], "env": parts["env"], "normalizer": normalizer_to_json(normalizer)}
    for name, value in contents.items():
        (tmp / f"{name}.json").write_text(json.dumps(value, indent=2) + "\n")
    (tmp / CARD).write_text(model_card({**parts, "config": config}, license=_card_license(directory)))
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")  # last: marks the folder complete
    old = None
    if directory.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.{_OLD}-", dir=directory.parent))
        os.replace(directory, old)  # onto the empty backup folder: rename(2) replaces an empty directory
    os.replace(tmp, directory)
    if old is not None:
        shutil.rmtree(old)
    return directory


def _card_license(directory: Path) -> str | None:
    try:
        return card_metadata((directory / CARD).read_text()).get("license")
    except (OSError, UnicodeDecodeError):
        return None


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
    if config.get("format_version") not in READ_VERSIONS:
        raise ValueError(f"{directory} has checkpoint format version {config.get('format_version')!r}; this "
                         f"s2robot reads versions {', '.join(map(str, READ_VERSIONS))}: use the s2robot version "
                         "that wrote it")
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


def weights_path(directory: str | Path, config: Mapping[str, Any]) -> Path:
    """The deployable weights file of a checkpoint folder of ``config``'s format version."""
    return Path(directory) / (WEIGHTS_V2 if config.get("format_version") == 2 else WEIGHTS)


def _deployed_weights(directory: Path, config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    path = weights_path(directory, config)
    if path.name == WEIGHTS:
        return load_weights(path, config.get("weights_file"))
    warnings.warn(f"{directory} is a format-2 checkpoint (model.pt, no model card); convert it to format "
                  f"{FORMAT_VERSION} with: {CONVERT} {directory} --out NEW_FOLDER", stacklevel=3)
    return load_tensors(path)


def _load_into(policy: ChunkTransformerPolicy, state: Mapping[str, torch.Tensor], source: Path) -> None:
    """Load ``state`` into ``policy``, refusing (naming ``source``) one that does not fit the policy's config."""
    own = policy.state_dict()
    shapes = {k: (tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
              if isinstance(state.get(k), torch.Tensor) and state[k].shape != v.shape}
    missing = [k for k in own if k not in state and not k.startswith("normalizer.")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or shapes:
        some = dict(list(shapes.items())[:3]) | ({"...": f"{len(shapes) - 3} more"} if len(shapes) > 3 else {})
        raise ValueError(f"{source} does not fit the policy of its config.json: missing {missing}, unexpected "
                         f"{unexpected}, shapes (file, config) {some}. Keep the weights with the config.json they "
                         "were saved with")
    policy.load_state_dict(state, strict=False)


def from_pretrained(directory_or_repo_id: str | Path, device: str | torch.device = "cpu", use_ema: bool = True, *,
                    revision: str | None = None, allow_download: bool = False
                    ) -> tuple[ChunkTransformerPolicy, dict[str, dict[str, Any]]]:
    """The policy of a checkpoint folder in eval mode, and its JSON parts (config, encoder, env, normalizer).

    directory_or_repo_id: a checkpoint folder, or a Hugging Face Hub repo id (``org/name``) found in the local
        Hugging Face cache (``policy.hub``; ``revision``: a branch, tag or commit); allow_download: fetch a repo the
        cache lacks (network), never done otherwise
    use_ema: False loads the raw (non-EMA) weights of a run trained with EMA, from its training state
    """
    directory = resolve_pretrained(directory_or_repo_id, revision, allow_download)
    parts = read_parts(directory)
    config = parts["config"]
    state, source = _deployed_weights(directory, config), weights_path(directory, config)
    if config.get("ema") and not use_ema:
        state, source = _weights_only(load_training_state(directory)["model"]), directory / TRAINING_STATE
    saved = {"action_space": "delta", **config["policy"]}  # checkpoints from before action_space learned deltas
    policy = build_policy(PolicyConfig(**saved), config["shape"], normalizer_from_json(parts["normalizer"]))
    _load_into(policy, state, source)
    return policy.to(device).eval(), parts


def record_evaluation(directory: str | Path, evaluation: Mapping[str, Any]) -> str:
    """Put ``evaluation`` on the model card of the checkpoint folder ``directory``, atomically, keeping the card's
    other evaluations (one per output folder); returns a one-line note of what was done.

    evaluation: ``model_card.evaluation_section``'s keys and ``weights_sha256``, the digest config.json recorded for
    the weights evaluated: when the folder holds other weights by now (a newer save), its card is left alone, as
    are a format-2 folder (no card), a snapshot in the Hugging Face cache and a README.md that is not a model card.
    """
    directory = Path(directory)
    if not directory.is_dir() or any(p.startswith("models--") for p in directory.resolve().parts):
        return f"{directory} is not a local checkpoint folder: no model card updated"
    card = directory / CARD
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # evaluations finishing at once each keep their section
        parts = read_parts(directory)
        config = parts["config"]
        if config.get("format_version") != FORMAT_VERSION:
            return (f"{directory} is a format-{config.get('format_version')} checkpoint without a model card: "
                    f"convert it ({CONVERT} {directory} --out NEW_FOLDER) to get one")
        if (config.get("weights_file") or {}).get("sha256") != evaluation.get("weights_sha256"):
            return f"{directory} holds other weights than were evaluated (saved again since): its card is left as is"
        text = card.read_text() if card.is_file() else ""
        if text and not is_model_card(text):
            return f"{card} is not an s2robot model card: left as is"
        with replacing(card) as tmp:
            tmp.write_text(with_evaluation(text, parts, evaluation))
    finally:
        os.close(fd)
    return f"model card {card}: recorded the evaluation in {evaluation['out']}"
