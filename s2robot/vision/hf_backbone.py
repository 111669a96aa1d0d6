"""DINOv2, SigLIP and CLIP vision towers (``transformers``) as S² backbones: ``(B, 3, t, t) -> (B, 1+N, D)``.

S² is model-agnostic: a tower goes through the same tiling, merging and readouts as our own ViT. Per tower:

- **Input**: RGB in [0, 1] normalized with the tower's own mean/std (``HFBackbone.image_mean``/``image_std``): the
  folder's ``preprocessor_config.json`` (``image_mean``, ``image_std``) when present, else the family's default
  (DINOv2: ImageNet; CLIP: OpenAI CLIP; SigLIP: 0.5/0.5). ``FrozenS2Encoder.preprocess`` applies it.
- **Output**: every token after the tower's final LayerNorm, one prefix token first. DINOv2's
  ``last_hidden_state`` is already normed (its CLS is ``pooler_output``); CLIP's is not, so CLIP's
  ``post_layernorm`` is applied to every token (its CLS is then exactly ``pooler_output``); SigLIP's is normed.
- **Prefix token**: DINOv2 and CLIP: the CLS token. DINOv2 register tokens (``num_register_tokens``, the
  ``-reg`` variants) are scratch space the model writes to and no readout reads: they are dropped. SigLIP has no
  CLS: its prefix token is the pooled output of its attention-pooling (MAP) head, SigLIP's own image embedding
  (the mean of the patch tokens for a tower built without a head), so the ``cls`` readout is that embedding,
  averaged over each scale's tiles like a CLS token, and ``cls+grid`` works unchanged.
- **Tile size**: the S² tile (``EncoderConfig.max_split_size``, default ``HFSpec.img_size``), a multiple of the patch
  size; position tables are interpolated (bicubic) to it (DINOv2 is trained at 518 px, run at 224 px by default).

Weights come only from disk, never downloaded at run time: a model folder (``config.json`` + ``model.safetensors``
or ``pytorch_model.bin``, read with ``weights_only=True``; a full CLIP/SigLIP checkpoint gives its vision tower), or a
hub id in the offline Hugging Face cache. The sha256 of the folder's config, preprocessor config and weight files
keys feature caches.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from s2robot.vision.image import IMAGENET_MEAN, IMAGENET_STD
from s2robot.vision.weights import AUTO, RANDOM, REPO_WEIGHTS_DIR, ResolvedWeights, cache_dir, file_sha256

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's preprocessing, RGB in [0, 1]
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
FAMILY_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD), "siglip": (SIGLIP_MEAN, SIGLIP_STD)}
# config.json ``model_type`` values each kind loads: the vision-only model's, or the full (vision + text) model's
MODEL_TYPES: dict[str, tuple[str, ...]] = {"dinov2": ("dinov2",), "dinov2-reg": ("dinov2_with_registers",),
                                           "clip": ("clip_vision_model", "clip"),
                                           "siglip": ("siglip_vision_model", "siglip")}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class HFSpec:
    """Architecture of a transformers vision tower (what params, FLOPs and feature width follow from).

    family: ``dinov2``, ``clip`` or ``siglip``
    repo_id: Hugging Face hub id of the pretrained weights (None: a test-sized tower, random weights only)
    img_size: S² tile side the tower runs at [px] (``EncoderConfig.model_size``)
    native_size: side its position table is trained for (``config.image_size``) [px]
    mlp_dim: hidden width of each block's MLP; head: SigLIP's attention-pooling head is present
    """

    family: str
    repo_id: str | None
    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    native_size: int
    img_size: int
    num_register_tokens: int = 0
    head: bool = False

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def model_prefix_tokens(self) -> int:
        """Tokens the tower puts before its patches: CLS (+ registers) for DINOv2, CLS for CLIP, none for SigLIP."""
        return 0 if self.family == "siglip" else 1 + self.num_register_tokens

    def arch(self) -> dict[str, Any]:
        """What a weights folder's config must agree on."""
        return {"hidden_size": self.embed_dim, "num_hidden_layers": self.depth, "num_attention_heads": self.num_heads,
                "mlp_dim": self.mlp_dim, "patch_size": self.patch_size, "image_size": self.native_size,
                "num_register_tokens": self.num_register_tokens, "head": self.head}

    def flops_per_image(self) -> int:
        """Forward FLOPs for one ``img_size`` tile, as ``vit.flops_per_image`` counts (2 per multiply-add; matmuls,
        the patch projection and attention; norms and activations left out), plus SigLIP's pooling head."""
        d, m, patches = self.embed_dim, self.mlp_dim, self.grid_size**2
        n = self.model_prefix_tokens + patches
        patch = patches * 3 * self.patch_size**2 * d
        per_block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * m
        # MAP head: one probe query attends over the patches (q, k, v, attention, out proj), then an MLP on it
        head = (d * d + 2 * patches * d * d + 2 * patches * d + d * d + 2 * d * m) if self.head else 0
        return 2 * (patch + self.depth * per_block + head)

    def param_count(self) -> int:
        """Parameters of the tower as loaded (position table at ``native_size``), counted on the meta device."""
        with torch.device("meta"):
            return sum(p.numel() for p in _classes(self)[0](random_config(self)).parameters())


def _dinov2(repo: str | None, d: int, depth: int, heads: int, registers: int = 0, native: int = 518, img: int = 224
            ) -> HFSpec:
    """DINOv2 (patch 14, MLP ratio 4): trained at 518 px, run here at 224 px tiles by default."""
    return HFSpec("dinov2", repo, d, depth, heads, 4 * d, 14, native, img, registers)


# Registry of towers (``EncoderConfig.variant``); add an entry to use another checkpoint of these families.
HF_VARIANTS: dict[str, HFSpec] = {
    "hf-dinov2-vits14": _dinov2("facebook/dinov2-small", 384, 12, 6),
    "hf-dinov2-vitb14": _dinov2("facebook/dinov2-base", 768, 12, 12),
    "hf-dinov2-vits14-reg": _dinov2("facebook/dinov2-with-registers-small", 384, 12, 6, registers=4),
    "hf-siglip-vitb16": HFSpec("siglip", "google/siglip-base-patch16-224", 768, 12, 12, 3072, 16, 224, 224, head=True),
    "hf-clip-vitb16": HFSpec("clip", "openai/clip-vit-base-patch16", 768, 12, 12, 3072, 16, 224, 224),
    "hf-clip-vitb32": HFSpec("clip", "openai/clip-vit-base-patch32", 768, 12, 12, 3072, 32, 224, 224),
    # Test-sized towers (32-D, 2 layers), random weights only: for tests and smoke runs.
    "hf-dinov2-micro": _dinov2(None, 32, 2, 2, native=42, img=28),
    "hf-siglip-micro": HFSpec("siglip", None, 32, 2, 2, 64, 16, 32, 32, head=True),
    "hf-clip-micro": HFSpec("clip", None, 32, 2, 2, 64, 8, 32, 32),
}


def is_hf_variant(variant: str) -> bool:
    return variant in HF_VARIANTS


def hf_spec(variant: str, img_size: int | None = None) -> HFSpec:
    """The registry entry for ``variant``, optionally run at another tile size (a multiple of its patch size)."""
    if variant not in HF_VARIANTS:
        raise ValueError(f"unknown transformers tower {variant!r}; available: {sorted(HF_VARIANTS)}")
    spec = HF_VARIANTS[variant]
    if img_size is None:
        return spec
    if img_size < spec.patch_size or img_size % spec.patch_size:
        raise ValueError(f"S² tile size {img_size} px is not a multiple of {variant}'s {spec.patch_size}-px patches; "
                         f"set max_split_size to a multiple of {spec.patch_size}, e.g. {spec.img_size}")
    return replace(spec, img_size=img_size)


# --- weights: a model folder, or a hub id in the offline cache; never a download ---


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as ``huggingface_hub`` finds it (read at call time, so tests can move it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("HF_HOME") or xdg / "huggingface").expanduser() / "hub"


def folder_files(folder: Path) -> list[Path]:
    """The files that define a tower in ``folder``: its config(s) and the weight files that will be read."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: a transformers model folder needs config.json and "
                                f"one of {list(WEIGHT_FILES)} (what `hf download <repo> --local-dir` writes)")
    found = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{folder} has config.json but no weights ({' / '.join(WEIGHT_FILES)}); copy the "
                                "complete model folder")
    weights = [found]
    if found.name.endswith(".index.json"):
        shards = sorted(set(json.loads(found.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks weight shards {missing} listed in {found.name}; copy them too")
        weights += [folder / s for s in shards]
    configs = [folder / n for n in ("config.json", "preprocessor_config.json") if (folder / n).is_file()]
    return configs + weights


def folder_digest(folder: Path) -> str:
    """sha256 over the names and contents of ``folder_files``: a changed weight, config or normalization changes it."""
    h = hashlib.sha256()
    for path in folder_files(folder):
        h.update(f"{path.name}:{file_sha256(path)};".encode())
    return h.hexdigest()


def _from_hf_cache(repo_id: str) -> Path | None:
    """The snapshot folder of ``repo_id`` in the offline hub cache, or None (``local_files_only``: no network)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=hf_cache_dir()))
    except Exception:  # not installed, not cached (LocalEntryNotFoundError), or not a valid repo id
        return None


def _missing_error(variant: str, folders: list[Path], hub_id: str | None) -> FileNotFoundError:
    name = (hub_id or variant).split("/")[-1]
    looked = ", ".join(map(str, folders)) + (f" and {hub_id!r} in the Hugging Face cache {hf_cache_dir()}"
                                             if hub_id else "")
    fetch = (f"on a machine with internet run `hf download {hub_id} --local-dir {name}` (or `huggingface-cli "
             f"download {hub_id} --local-dir {name}`) and copy the folder to {REPO_WEIGHTS_DIR / 'hf' / name} or "
             f"{cache_dir() / 'hf' / name}; or copy a Hugging Face cache holding it here and set HF_HOME to it; or "
             if hub_id else "")
    return FileNotFoundError(
        f"no weights for encoder {variant!r}{f' ({hub_id})' if hub_id else ''}: looked for {looked}. Nothing is "
        f"downloaded at run time. To fix: {fetch}pass a model folder (encoder.weights=/path/to/{name}, holding "
        "config.json and model.safetensors), or use encoder.weights=random for an untrained tower (results are "
        "then meaningless)."
    )


def resolve_hf_weights(variant: str, weights: str = AUTO, seed: int = 0) -> ResolvedWeights:
    """Find a tower's weights: ``random``; ``auto`` (the registry's hub id: ``$S2ROBOT_WEIGHTS_DIR/hf/<name>``,
    ``weights/hf/<name>``, then the offline hub cache); or a model folder path or hub id (folder first)."""
    spec = hf_spec(variant)
    if weights == RANDOM:
        return ResolvedWeights(RANDOM, f"random-seed{seed}")
    if weights == AUTO:
        if spec.repo_id is None:
            raise FileNotFoundError(f"{variant} is a test-sized tower with no pretrained weights: use "
                                    "encoder.weights=random, or pass a model folder")
        name = spec.repo_id.split("/")[-1]
        folders, hub_id = [cache_dir() / "hf" / name, REPO_WEIGHTS_DIR / "hf" / name], spec.repo_id
    else:
        path = Path(weights).expanduser()
        if path.is_file():
            raise FileNotFoundError(f"encoder.weights={weights} is a file; a transformers tower loads from its model "
                                    f"folder (config.json + model.safetensors): pass {path.parent}")
        parts = weights.split("/")
        folders = [path]
        hub_id = weights if len(parts) == 2 and all(parts) and not weights.startswith((".", "~")) else None
    for folder in folders:
        if folder.is_dir():
            return ResolvedWeights("hf-folder", folder_digest(folder), folder)
    snapshot = _from_hf_cache(hub_id) if hub_id else None
    if snapshot is not None:
        return ResolvedWeights("hf-folder", folder_digest(snapshot), snapshot)
    raise _missing_error(variant, folders, hub_id)


# --- building: transformers is imported only here (the optional ``hf`` extra) ---


def _transformers() -> ModuleType:
    try:
        import transformers
    except ImportError as e:
        raise ImportError("DINOv2 / SigLIP / CLIP encoders need transformers: pip install 's2robot[hf]'") from e
    return transformers


def _kind(spec: HFSpec) -> str:
    return "dinov2-reg" if spec.family == "dinov2" and spec.num_register_tokens else spec.family


def _classes(spec: HFSpec) -> tuple[type, type, type | None]:
    """(model class, vision config class, full vision+text config class or None) of the spec's kind."""
    names = {"dinov2": ("Dinov2Model", "Dinov2Config", None),
             "dinov2-reg": ("Dinov2WithRegistersModel", "Dinov2WithRegistersConfig", None),
             "clip": ("CLIPVisionModel", "CLIPVisionConfig", "CLIPConfig"),
             "siglip": ("SiglipVisionModel", "SiglipVisionConfig", "SiglipConfig")}[_kind(spec)]
    tf = _transformers()
    return tuple(getattr(tf, n) if n else None for n in names)  # type: ignore[return-value]


def random_config(spec: HFSpec) -> Any:
    """The transformers config of ``spec`` for a randomly initialised tower."""
    common = {"hidden_size": spec.embed_dim, "num_hidden_layers": spec.depth, "num_attention_heads": spec.num_heads,
              "patch_size": spec.patch_size, "image_size": spec.native_size}
    config_class = _classes(spec)[1]
    if spec.family == "dinov2":
        extra = {"num_register_tokens": spec.num_register_tokens} if spec.num_register_tokens else {}
        return config_class(**common, mlp_ratio=spec.mlp_dim // spec.embed_dim, **extra)  # an int in transformers 5
    extra = {"vision_use_head": spec.head} if spec.family == "siglip" else {}
    return config_class(**common, intermediate_size=spec.mlp_dim, **extra)


def _arch_of(config: Any) -> dict[str, Any]:
    mlp = int(config.hidden_size * config.mlp_ratio) if hasattr(config, "mlp_ratio") else config.intermediate_size
    return {"hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads, "mlp_dim": mlp, "patch_size": config.patch_size,
            "image_size": config.image_size, "num_register_tokens": getattr(config, "num_register_tokens", 0),
            "head": bool(getattr(config, "vision_use_head", False))}


def read_config(folder: Path, variant: str) -> Any:
    """The vision config in ``folder``'s config.json, checked against ``variant``'s registry entry."""
    spec = hf_spec(variant)
    raw = json.loads((folder / "config.json").read_text())
    model_type = raw.get("model_type")
    if model_type not in MODEL_TYPES[_kind(spec)]:
        raise ValueError(f"{folder} holds a {model_type!r} model, but encoder {variant!r} is a {_kind(spec)} tower "
                         f"(model_type {' or '.join(MODEL_TYPES[_kind(spec)])}); pick the variant that matches the "
                         f"folder: {sorted(HF_VARIANTS)}")
    _, config_class, full_class = _classes(spec)
    config = full_class.from_dict(raw).vision_config if "vision_config" in raw else config_class.from_dict(raw)
    ours, theirs = spec.arch(), _arch_of(config)
    diff = {k: f"{theirs[k]} (variant: {v})" for k, v in ours.items() if theirs[k] != v}
    if diff:
        raise ValueError(f"{folder} does not hold {variant!r}'s architecture: {diff}; pick the variant that matches "
                         "the folder, or register one in s2robot/vision/hf_backbone.py (HF_VARIANTS)")
    return config


def read_normalization(folder: Path, family: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the tower's inputs: ``folder``'s preprocessor_config.json, else the family's default."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return FAMILY_NORMALIZATION[family]
    raw, (default_mean, default_std) = json.loads(path.read_text()), FAMILY_NORMALIZATION[family]
    mean, std = raw.get("image_mean", default_mean), raw.get("image_std", default_std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"{path}: image_mean/image_std must be 3 values each (std > 0), got {mean} / {std}")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def load_pretrained(folder: Path, variant: str) -> nn.Module:
    """The tower in ``folder`` through transformers' own loader (``local_files_only``: no network; safetensors, or
    .bin with ``weights_only=True``; renamed keys of older checkpoints and the vision half of a full CLIP/SigLIP
    model handled). A missing or misshapen tower weight is an error; text-tower keys are skipped."""
    tf, spec = _transformers(), hf_spec(variant)
    verbosity, bars = tf.logging.get_verbosity(), tf.utils.logging.is_progress_bar_enabled()
    tf.logging.set_verbosity_error()  # the load report below replaces transformers' (it lists every text key)
    tf.utils.logging.disable_progress_bar()
    try:
        model, info = _classes(spec)[0].from_pretrained(folder, config=read_config(folder, variant),
                                                         local_files_only=True, output_loading_info=True)
    finally:
        tf.logging.set_verbosity(verbosity)
        if bars:
            tf.utils.logging.enable_progress_bar()
    missing = sorted(k for k in info["missing_keys"] if not k.endswith("position_ids"))
    if missing or info["mismatched_keys"]:
        raise ValueError(f"{folder} does not hold a complete {variant!r} tower: missing {missing[:8]}, misshapen "
                         f"{sorted(info['mismatched_keys'])[:8]}; is it a checkpoint of this family and size?")
    return model.float()  # float16 checkpoints too; the encoder casts to its compute dtype


class HFBackbone(nn.Module):
    """A transformers vision tower as S² needs it: ``(B, 3, t, t)`` normalized with ``image_mean``/``image_std`` →
    ``(B, 1+N, D)`` after the final norm, the prefix token (CLS, or SigLIP's pooled embedding) first."""

    num_prefix_tokens = 1

    def __init__(self, spec: HFSpec, model: nn.Module, image_mean: tuple[float, ...], image_std: tuple[float, ...]
                 ) -> None:
        super().__init__()
        self.cfg = spec
        self.model = model
        self.image_mean, self.image_std = image_mean, image_std
        # CLIP and SigLIP keep their position table unless asked; DINOv2 interpolates whenever the grid differs
        self._call = ({"interpolate_pos_encoding": True}
                      if spec.family != "dinov2" and spec.img_size != spec.native_size else {})

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.cfg.img_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (t, t):
            raise ValueError(f"expected images (B, 3, {t}, {t}), got {tuple(x.shape)}; resize the input or build the "
                             "tower with another tile size")
        out = self.model(pixel_values=x, **self._call)
        tokens = out.last_hidden_state  # (B, P0+N, D)
        if self.cfg.family == "dinov2":  # (B, 1+R+N, D) -> (B, 1+N, D): registers dropped
            return torch.cat([tokens[:, :1], tokens[:, 1 + self.cfg.num_register_tokens :]], dim=1)
        if self.cfg.family == "clip":  # the CLS of this is CLIP's pooler_output
            return getattr(self.model, "vision_model", self.model).post_layernorm(tokens)
        pooled = out.pooler_output if self.cfg.head else tokens.mean(dim=1)  # SigLIP: (B, D)
        return torch.cat([pooled[:, None], tokens], dim=1)


def build_hf_backbone(variant: str, tile_size: int, resolved: ResolvedWeights, seed: int = 0) -> HFBackbone:
    """The tower of ``variant`` at ``tile_size`` px with resolved weights (seeded random init for ``random``)."""
    spec = hf_spec(variant, tile_size)
    if resolved.is_random:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _classes(spec)[0](random_config(spec))
        mean, std = FAMILY_NORMALIZATION[spec.family]
    else:
        folder = Path(resolved.path)
        model = load_pretrained(folder, variant)
        mean, std = read_normalization(folder, spec.family)
    return HFBackbone(spec, model.eval(), mean, std)
