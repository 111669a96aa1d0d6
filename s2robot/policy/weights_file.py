"""The deployable weights of a checkpoint folder: ``model.safetensors``, with its sha256 recorded in ``config.json``.

safetensors holds a JSON header and raw tensor bytes, nothing that runs when read. The file alone cannot tell a
flipped byte inside a tensor from a real weight, so ``save_weights`` returns the file's sha256 and size, which
``config.json`` records, and ``load_weights`` refuses a file that no longer matches them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save as tensors_to_bytes

WEIGHTS = "model.safetensors"
METADATA = {"format": "pt"}  # what Hugging Face libraries expect in the header of a PyTorch safetensors file


def save_weights(path: Path, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Write ``state`` (name → tensor) as safetensors at ``path``; returns ``{"file", "sha256", "bytes"}``.

    Every tensor is copied to contiguous CPU memory first: safetensors refuses tensors that share storage (a tied
    or sliced view), and a copy stores each one whole.
    """
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    data = tensors_to_bytes(tensors, metadata=METADATA)
    path.write_bytes(data)
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def load_weights(path: Path, recorded: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path`` on the CPU, checked against ``recorded`` (``save_weights``'s
    return, as ``config.json`` keeps it) when given.

    Raises FileNotFoundError for a missing file and ValueError naming the file for one that is truncated, altered
    or not safetensors at all.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the checkpoint folder is incomplete. Copy the whole folder "
                                "again, or re-save the checkpoint")
    data = path.read_bytes()
    if recorded is not None and recorded.get("sha256"):
        found = hashlib.sha256(data).hexdigest()
        if found != recorded["sha256"] or len(data) != recorded.get("bytes", len(data)):
            raise ValueError(f"{path} is not the file its config.json records ({recorded.get('bytes')} bytes, sha256 "
                             f"{recorded['sha256'][:16]}…; found {len(data)} bytes, {found[:16]}…): it was truncated "
                             "or changed after the checkpoint was saved. Copy or download the folder again, or "
                             "re-save it with save_pretrained")
    try:
        return tensors_from_bytes(data)
    except (safetensors.SafetensorError, ValueError, RuntimeError, TypeError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}): it is truncated or was altered. Copy or "
                         "download the folder again, or re-save it with save_pretrained") from None
