"""Checkpoints named by a Hugging Face Hub repo id: found in the local Hugging Face cache, downloaded only on request.

A checkpoint folder is laid out the way ``huggingface_hub.upload_folder`` pushes a model repo (``config.json``,
``model.safetensors`` and the ``README.md`` model card at the top), so a repo id resolves, through
``snapshot_download``, to a folder that loads like a local one. The cache is ``$HF_HUB_CACHE`` (default
``~/.cache/huggingface/hub``); nothing is fetched at run time unless the caller allows it.
"""

from __future__ import annotations

import re
from pathlib import Path

_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,94}/)?[A-Za-z0-9][\w.-]{0,94}$")


def looks_like_repo_id(name: str) -> bool:
    """Whether ``name`` could be a Hub model repo id (``org/name`` or ``name``) rather than only a local path."""
    return bool(_REPO_ID.match(name)) and ".." not in name and "--" not in name and not name.endswith((".", "-"))


def resolve_pretrained(name: str | Path, revision: str | None = None, allow_download: bool = False) -> Path:
    """The local folder of ``name``: ``name`` itself when it exists here or cannot be a repo id, else the snapshot of
    the Hub repo ``name`` (at ``revision``, default ``main``) in the local Hugging Face cache.

    allow_download: fetch the repo when the cache lacks it (network); by default a missing repo is a
    FileNotFoundError naming the repo id and the command that fetches it.
    """
    path = Path(name)
    first = Path(path.parts[0]) if path.parts else path
    if path.exists() or path.is_symlink() or not looks_like_repo_id(str(name)) or first.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        raise FileNotFoundError(f"no checkpoint folder {str(name)!r} here; to load it as a Hugging Face Hub repo id, "
                                "install huggingface_hub (pip install 's2robot[hf]')") from None
    at = f" at revision {revision!r}" if revision else ""
    try:
        return Path(snapshot_download(str(name), revision=revision, local_files_only=not allow_download,
                                      library_name="s2robot"))
    except (OSError, ValueError) as e:
        if allow_download:
            raise FileNotFoundError(f"could not download the Hugging Face Hub repo {str(name)!r}{at} "
                                    f"({type(e).__name__}: {e})") from None
        raise FileNotFoundError(
            f"no checkpoint folder {str(name)!r} here, and no Hugging Face Hub repo {str(name)!r}{at} in the local "
            f"cache ({HF_HUB_CACHE}). Fetch the repo once where there is a network (hf download {name}; the cache "
            "folder can be copied), pass allow_download=True, or train a checkpoint with scripts/train_bc.py"
        ) from None
