"""Finding and loading MVP encoder checkpoints.

Resolution order for a variant ``NAME`` (``resolve_weights``):

1. an explicit path (``EncoderConfig.weights: /path/to/file.pth``);
2. ``$S2ROBOT_WEIGHTS_DIR/NAME.pth``, else ``~/.cache/s2robot/mvp/NAME.pth``;
   then ``weights/NAME.pth`` shipped in the repository (e.g. the in-domain MAE ``vitti-mae-cubepick``);
3. the official ``mvp`` package (github ir413/mvp, the ``mvp`` extra), if importable: its loaded state dict;
4. a download from MVP's official URL, only when asked (``allow_download`` or
   ``python -m s2robot.workflows.weights download NAME``: needs internet);
5. otherwise a ``FileNotFoundError`` that names the file to place and where.

Checkpoints are MVP's format: the encoder state dict under ``"model"`` with timm key names. MAE decoder keys
and the mask token are ignored and reported; a missing encoder key or a shape mismatch is an error naming
the keys; a position table for another image size is resampled bicubically, with a warning. Tensors are
cast to the model's dtype, so float16 files (the shipped ones) load into float32 models.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from s2robot.common.atomic import replacing
from s2robot.vision.vit import VisionTransformer, resize_pos_embed

# Official download URLs (github ir413/mvp, mvp/backbones/model_zoo.py).
MVP_URLS: dict[str, str] = {
    "vits-mae-hoi": "https://berkeley.box.com/shared/static/m93ynem558jo8vltlads5rcmnahgsyzr.pth",
    "vits-mae-in": "https://berkeley.box.com/shared/static/qlsjkv03nngu37eyvtjikfe7rz14k66d.pth",
    "vits-sup-in": "https://berkeley.box.com/shared/static/95a4ncqrh1o7llne2b1gpsfip4dt65m4.pth",
    "vitb-mae-egosoup": "https://berkeley.box.com/shared/static/0ckepd2ja3pi570z89ogd899cn387yut.pth",
    "vitl-256-mae-egosoup": "https://berkeley.box.com/shared/static/6p0pc47mlpp4hhwlin2hf035lxlgddxr.pth",
}
# MVP publishes no checksums. Fill in an md5 here (or pass --md5) once a trusted copy has been checked;
# until then a download prints and records its md5 and sha256 instead of verifying them.
MVP_MD5: dict[str, str | None] = dict.fromkeys(MVP_URLS)

# Checkpoints that ship with the repository (small, float16), with a NAME.json of provenance next to each: those
# JSON files, each recording its checkpoint's sha256, are the registry of shipped weights (``shipped_weights``).
REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"

RANDOM = "random"
AUTO = "auto"
_IGNORED_PREFIXES = ("decoder_", "mask_token")  # MAE decoder and mask token: not part of the encoder


def cache_dir() -> Path:
    """Where named checkpoints are looked for: ``$S2ROBOT_WEIGHTS_DIR`` or ``~/.cache/s2robot/mvp``."""
    env = os.environ.get("S2ROBOT_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "s2robot" / "mvp"


def shipped_weights() -> dict[str, str | None]:
    """The checkpoints that ship with the repository: ``{NAME: sha256}`` for every ``weights/NAME.json`` (None where
    that JSON cannot be read or records no sha256: still shipped, so still never replaced)."""
    shipped: dict[str, str | None] = {}
    for meta in sorted(REPO_WEIGHTS_DIR.glob("*.json")):
        try:
            sha = json.loads(meta.read_text()).get("sha256")
        except (OSError, ValueError, AttributeError):  # unreadable, not JSON, or not an object
            sha = None
        shipped[meta.stem] = sha if isinstance(sha, str) else None
    return shipped


def shipped_name(path: str | Path) -> str | None:
    """The name of the shipped checkpoint that ``path`` is (its ``.pth`` or its ``.json``, by any name that resolves
    to it: a symlinked folder, ``..``), else None."""
    path = Path(path).resolve()
    if path.parent != REPO_WEIGHTS_DIR.resolve() or path.suffix not in (".pth", ".json"):
        return None
    return path.stem if path.stem in shipped_weights() else None


@dataclass(frozen=True)
class ResolvedWeights:
    """Where an encoder's weights come from. ``digest`` identifies the content (keys feature caches)."""

    source: str  # "file" | "mvp-package" | "hf-folder" | "random"
    digest: str  # sha256 of the file / of the state dict / of a model folder's files, or "random-seed<N>"
    path: Path | None = None
    state_dict: Mapping[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def is_random(self) -> bool:
        return self.source == RANDOM

    def label(self) -> str:
        if self.is_random:
            return f"RANDOM weights ({self.digest}, not pretrained)"
        return f"{self.path}" if self.path else f"{self.source} ({self.digest[:12]})"


@dataclass(frozen=True)
class LoadReport:
    """What ``load_encoder_weights`` did with the keys of a checkpoint."""

    ignored: tuple[str, ...]  # MAE decoder / mask token keys
    unexpected: tuple[str, ...]  # other keys not in the encoder (e.g. a classifier head), also ignored
    resized_pos_embed: bool


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime)."""
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, shapes, dtypes and values."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _from_mvp_package(name: str) -> ResolvedWeights | None:
    """The state dict from the official ``mvp`` package, if it (not PyPI's unrelated ``mvp``) is there."""
    try:
        mvp = importlib.import_module("mvp")
    except Exception:  # not installed, or its own imports (timm, isaacgym) fail
        return None
    if not hasattr(mvp, "available_models") or name not in mvp.available_models():
        return None  # PyPI's `mvp` is a Maya package: not the one we want
    try:
        state_dict = mvp.load(name).state_dict()
    except Exception as e:  # usually: no cached file and no internet
        warnings.warn(f"the mvp package could not load {name!r} ({e}); trying other sources", stacklevel=3)
        return None
    return ResolvedWeights("mvp-package", state_dict_sha256(state_dict), None, state_dict)


def _missing_weights_error(name: str) -> FileNotFoundError:
    target = cache_dir() / f"{name}.pth"
    url = MVP_URLS.get(name)
    how = (
        f"download it with `python -m s2robot.workflows.weights download {name}` (needs internet; URL {url}) "
        f"or copy the file to {target}"
        if url
        else f"pretrain it in-domain with `python scripts/pretrain_mae.py ... export_name={name}` (the README's "
        f"command for it, under 'In-domain MVP pretraining'), which writes {REPO_WEIGHTS_DIR / f'{name}.pth'}"
        if name.endswith("-cubepick")
        else f"place an MVP-format checkpoint ({{'model': state_dict}}) at {target}"
    )
    return FileNotFoundError(
        f"no weights found for encoder variant {name!r}. Looked for {target}, {REPO_WEIGHTS_DIR / f'{name}.pth'} "
        f"(set S2ROBOT_WEIGHTS_DIR to look elsewhere) and for the official mvp package. To fix: {how}, "
        "or pass an explicit path (encoder.weights=/path/to/file.pth), or use encoder.weights=random "
        "for an untrained encoder (results are then meaningless)."
    )


def resolve_weights(
    name: str, weights: str = AUTO, seed: int = 0, allow_download: bool = False
) -> ResolvedWeights:
    """Find the weights for variant ``name``: ``weights`` is ``"auto"``, ``"random"`` or a file path. A transformers
    tower (``hf_backbone.HF_VARIANTS``) resolves to a model folder, never downloaded (``resolve_hf_weights``)."""
    from s2robot.vision import hf_backbone  # imports this module: resolved at call time

    if hf_backbone.is_hf_variant(name):
        return hf_backbone.resolve_hf_weights(name, weights, seed)
    if weights == RANDOM:
        return ResolvedWeights(RANDOM, f"random-seed{seed}")
    if weights != AUTO:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"encoder weights file {path} does not exist; check encoder.weights")
        return ResolvedWeights("file", file_sha256(path), path)
    for path in (cache_dir() / f"{name}.pth", REPO_WEIGHTS_DIR / f"{name}.pth"):
        if path.is_file():
            return ResolvedWeights("file", file_sha256(path), path)
    if name in MVP_URLS:
        from_pkg = _from_mvp_package(name)
        if from_pkg is not None:
            return from_pkg
        if allow_download:
            path = download(name)
            return ResolvedWeights("file", file_sha256(path), path)
    raise _missing_weights_error(name)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The encoder state dict in an MVP-format file (``{"model": state_dict}``, or a bare state dict)."""
    try:  # MAE-style files may pickle an argparse.Namespace of training args next to the weights: allowed,
        # as plain data; anything else that is not a tensor or a container is refused (never unpickled as code)
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"cannot read checkpoint {path} with weights_only=True: {e}. The file may be truncated, not a torch "
            "checkpoint, or hold objects other than tensors; download or copy it again."
        ) from e
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, Mapping) or "patch_embed.proj.weight" not in ckpt:
        keys = list(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(
            f"{path} is not an MVP-format ViT checkpoint: expected {{'model': state_dict}} with timm ViT "
            f"keys such as 'patch_embed.proj.weight'; found {keys}"
        )
    return {k.removeprefix("module."): v for k, v in ckpt.items()}


def load_encoder_weights(
    model: VisionTransformer, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> LoadReport:
    """Copy an MVP/timm-format state dict into ``model``; strict about the encoder's own keys."""
    own = model.state_dict()
    ignored = tuple(sorted(k for k in state_dict if k.startswith(_IGNORED_PREFIXES)))
    unexpected = tuple(sorted(k for k in state_dict if k not in own and k not in ignored))
    missing = sorted(k for k in own if k not in state_dict)
    if missing:
        raise ValueError(f"{source} lacks encoder keys {missing}; is it a checkpoint of this ViT variant?")
    sd = {k: state_dict[k] for k in own}
    resized = False
    theirs, ours = sd["pos_embed"].shape, own["pos_embed"].shape
    if theirs != ours and theirs[-1] == ours[-1]:
        grid = model.cfg.grid_size
        warnings.warn(
            f"{source}: position table {tuple(sd['pos_embed'].shape)} is for another image size; resampled "
            f"bicubically to a {grid}x{grid} grid ({model.cfg.img_size} px). Features differ from the "
            "model's native resolution.",
            stacklevel=2,
        )
        sd["pos_embed"] = resize_pos_embed(sd["pos_embed"], grid, model.num_prefix_tokens)
        resized = True
    bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if sd[k].shape != v.shape]
    if bad:
        raise ValueError(f"{source} has shapes that do not fit this ViT (checkpoint vs model): {bad}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)  # f16 file → f32
    if ignored or unexpected:
        also = f" and {len(unexpected)} unused keys {list(unexpected)}" if unexpected else ""
        warnings.warn(f"{source}: ignored {len(ignored)} MAE decoder/mask keys{also}", stacklevel=2)
    return LoadReport(ignored, unexpected, resized)


def load_resolved(model: VisionTransformer, resolved: ResolvedWeights, seed: int = 0) -> LoadReport | None:
    """Initialise ``model`` from resolved weights (seeded random init for ``random``)."""
    if resolved.is_random:
        model.reset_parameters(torch.Generator().manual_seed(seed))
        return None
    sd = resolved.state_dict if resolved.state_dict is not None else read_checkpoint(resolved.path)
    return load_encoder_weights(model, sd, source=str(resolved.path or resolved.source))


def download(name: str, dest_dir: Path | None = None, md5: str | None = None, timeout: float = 30.0) -> Path:
    """Download MVP's official checkpoint for ``name`` into the cache dir; check ``md5`` when known."""
    if name not in MVP_URLS:
        raise ValueError(f"{name!r} is not an MVP release; downloadable: {sorted(MVP_URLS)}")
    from tqdm import tqdm

    dest = (dest_dir or cache_dir()) / f"{name}.pth"
    md5_hash = hashlib.md5()
    with replacing(dest) as part:  # a unique temp file beside dest: renamed onto it only once checked
        try:
            with urllib.request.urlopen(MVP_URLS[name], timeout=timeout) as response, open(part, "wb") as f:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=name) as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        f.write(block)
                        md5_hash.update(block)
                        bar.update(len(block))
        except OSError as e:
            raise ConnectionError(
                f"could not download {name} from {MVP_URLS[name]} ({e}). Without internet, copy the file from a "
                f"machine that has it to {dest}."
            ) from e
        expected = md5 or MVP_MD5.get(name)
        if expected and md5_hash.hexdigest() != expected:
            raise ValueError(f"md5 of the download is {md5_hash.hexdigest()}, expected {expected}; try again")
        read_checkpoint(part)  # refuse an HTML error page saved as .pth
    print(f"saved {dest}\n  md5    {md5_hash.hexdigest()}\n  sha256 {file_sha256(dest)}")
    return dest
