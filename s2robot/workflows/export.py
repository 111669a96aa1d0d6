"""The export of a trained encoder as an MVP-format checkpoint with a JSON of its provenance.

``export_encoder`` writes ``{"model": state dict}`` (timm key names) and the provenance beside it, each through a
temporary file, so ``s2robot.vision.weights`` loads it like an official MVP file. An export replaces no existing file
unless asked, and never a checkpoint that ships with the repository (``check_export_target``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from s2robot.common.atomic import replacing
from s2robot.sim.frames import FrameDataConfig
from s2robot.vision.weights import file_sha256, shipped_name


def check_export_target(path: Path, overwrite: bool = False) -> None:
    """Refuse an export to ``path`` (``<name>.pth``, and its ``<name>.json``) that would replace a checkpoint shipped
    with the repository (never allowed) or, unless ``overwrite``, any existing file."""
    files = (path, path.with_suffix(".json"))
    name = next((n for n in map(shipped_name, files) if n is not None), None)
    if name is not None:
        raise FileExistsError(
            f"{path} is the checkpoint {name!r} that ships with the repository (its sha256 is registered in "
            f"{path.with_suffix('.json')}); an export never replaces it, even with export_overwrite=true. "
            "Export under another export_name or export_dir, or export_name=null; to replace the shipped checkpoint "
            "on purpose, delete both its files first (git rm)")
    existing = [str(f) for f in files if f.exists() or f.is_symlink()]
    if existing and not overwrite:
        raise FileExistsError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: an export "
                              "replaces nothing unless asked. Set export_overwrite=true to replace it, or export "
                              "under another export_name or export_dir")


def export_encoder(
    state: dict[str, torch.Tensor], path: Path, fp16: bool, provenance: dict[str, Any], overwrite: bool = False
) -> tuple[Path, dict[str, Any]]:
    """Write ``{"model": state}`` (an encoder's state dict: MVP format) to ``path`` and its provenance to
    ``.json``, each through a temporary file beside it and ``os.replace`` (a reader never sees half a file).

    Refuses, before writing anything, to replace a shipped checkpoint or, unless ``overwrite``, an existing file
    (``check_export_target``).
    """
    check_export_target(path, overwrite)
    if fp16:
        state = {k: v.half() for k, v in state.items()}
    meta = path.with_suffix(".json")
    with replacing(path) as tmp_pth, replacing(meta) as tmp_meta:
        torch.save({"model": state}, tmp_pth)
        info = provenance | {"file": path.name, "dtype": "float16" if fp16 else "float32",
                             "bytes": tmp_pth.stat().st_size, "sha256": file_sha256(tmp_pth)}
        tmp_meta.write_text(json.dumps(info, indent=2) + "\n")
        check_export_target(path, overwrite)  # again: another export may have landed while this one was written
    return path, info


def describe_data(data: FrameDataConfig, n_frames: int, crop_scale: Sequence[float], crop_ratio: Sequence[float],
                  hflip: bool, s2_img_sizes: Sequence[int]) -> dict[str, Any]:
    """The provenance of an exported encoder's training images: frames, their source, the augmentation."""
    gen = asdict(data.generator)
    return {"frames": n_frames, "camera": data.camera, "stores": list(data.stores),
            "generator": gen if data.generator.n_frames > 0 else None,
            "generator_key": data.generator.key() if data.generator.n_frames > 0 else None,
            "augmentation": {"crop_scale": list(crop_scale), "crop_ratio": list(crop_ratio),
                             "hflip": hflip, "s2_img_sizes": list(s2_img_sizes)}}
