"""The feature-cache workflow: encode a demo store once with a frozen encoder (``scripts/cache_features.py``),
and the cache that training reads, built by rank 0 when missing or stale."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from s2robot.common.distributed import DistInfo, barrier
from s2robot.data.features import (
    build_feature_cache,
    default_cache_path,
    open_feature_cache,
    open_views_cache,
    slice_feature_cache,
)
from s2robot.data.store import EpisodeStore
from s2robot.data.views import ViewsConfig, views_cache_path
from s2robot.vision.encoder import EncoderConfig, build_encoder, encoder_fingerprint, weights_digest


@dataclass
class FeatureCacheConfig:
    """``scripts/cache_features.py``: which demos, which encoder, where to.

    demos: path of the demo store (``demos/<name>.zarr``)
    out: cache path; default ``demos/features/<name>-<encoder fingerprint>.zarr``
    batch_size: frames per encoder call (raise it on a GPU)
    views: also encode shifted views of every frame beside the cache (``views.n`` of them; see
        ``s2robot.data.views``), as training with the same ``views`` would
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    demos: str = "demos/cube_pick.zarr"
    out: str | None = None
    batch_size: int = 256
    views: ViewsConfig = field(default_factory=ViewsConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1 (frames per encoder call), got {self.batch_size}")


def cache_features(cfg: FeatureCacheConfig, progress: bool = True) -> Path:
    """Build (or resume, or reuse) the feature cache of ``cfg``; returns its path."""
    encoder = build_encoder(cfg.encoder)
    print(f"encoder {cfg.encoder.variant} {encoder.img_sizes} on {encoder.device} ({encoder.dtype}), "
          f"weights: {encoder.weights.label()}, fingerprint {encoder.fingerprint}")
    path = build_feature_cache(cfg.demos, encoder, cfg.out, cfg.batch_size, progress=progress)
    if cfg.views.n:
        views = build_feature_cache(cfg.demos, encoder, views_cache_path(path, cfg.views), cfg.batch_size,
                                    progress=progress, views=cfg.views)
        print(f"{cfg.views.n} shifted view(s) of every frame (≤ {cfg.views.shift} px) in {views}")
    return path


def _cache_is_current(path: Path, demos: str, fingerprint: str) -> bool:
    """Whether the cache at ``path`` is complete for the demo store as it is now (a build stopped half-way is not:
    building again resumes it)."""
    if not path.exists():
        return False
    cache = open_feature_cache(path, fingerprint)
    if not Path(demos).exists():
        return True  # a cache without its demo store beside it: trust its key
    source = EpisodeStore.open(demos)
    return cache.attrs["source"]["fingerprint"] == source.fingerprint and cache.n_episodes == source.n_episodes


def prepare_cache(demos: str, cache: str | None, encoder: EncoderConfig, batch_size: int = 256,
                  dist_info: DistInfo | None = None, progress: bool = True) -> tuple[Path, str]:
    """(path, encoder fingerprint) of the feature cache for (demos, encoder), built by rank 0 when missing or
    stale."""
    dist_info = dist_info or DistInfo()
    if not Path(demos).exists() and not (cache and Path(cache).exists()):
        raise FileNotFoundError(f"demo store {demos} does not exist; record demos first with "
                                "scripts/record_demos.py (or set demos=/path/to/store.zarr)")
    fingerprint = encoder_fingerprint(encoder, weights_digest(encoder))
    path = Path(cache) if cache else default_cache_path(demos, fingerprint)
    if dist_info.is_main and not _cache_is_current(path, demos, fingerprint):
        frozen = build_encoder(encoder)
        if frozen.weights.is_random and progress:
            print(f"WARNING: encoder {encoder.variant} has RANDOM weights: success numbers will not "
                  "mean anything about pretrained features")
        superset = _superset_cache(demos, encoder)
        if superset is not None:
            slice_feature_cache(superset, demos, frozen, path, progress=progress)
        else:
            build_feature_cache(demos, frozen, path, batch_size, progress=progress)
        del frozen
    barrier(dist_info)
    return path, fingerprint


def prepare_views(demos: str, cache_path: Path, encoder: EncoderConfig, views: ViewsConfig, batch_size: int = 256,
                  dist_info: DistInfo | None = None, progress: bool = True) -> Path | None:
    """Path of the shifted views beside the (current) feature cache at ``cache_path`` (``s2robot.data.views``),
    built (or resumed) by rank 0 when missing, stale or incomplete; None when ``views.n`` is 0."""
    if not views.n:
        return None
    dist_info = dist_info or DistInfo()
    path = views_cache_path(cache_path, views)
    cache = open_feature_cache(cache_path)
    try:  # complete views of this cache's encoder and demos: nothing to build, demos or not
        open_views_cache(path, cache.attrs["encoder_fingerprint"], views, cache.attrs["source"]["fingerprint"],
                         cache.n_episodes)
        return path
    except (ValueError, FileNotFoundError):
        pass
    if not Path(demos).exists():  # on every rank: none waits at the barrier for a rank that raised
        raise FileNotFoundError(f"demo store {demos} does not exist, and the shifted views (views.n={views.n}) are "
                                "encoded from its frames: record the demos, or train with views.n=0")
    if dist_info.is_main:
        frozen = build_encoder(encoder)
        build_feature_cache(demos, frozen, path, batch_size, progress=progress, views=views)  # resumes a partial one
        del frozen
    barrier(dist_info)
    return path


def _superset_cache(demos: str, encoder: EncoderConfig) -> Path | None:
    """For a ``cls`` readout: a complete, current ``cls+grid`` cache of the same encoder and demos at its default
    path (its features start with the CLS ones), else None."""
    if encoder.is_oracle or encoder.readout != "cls" or not Path(demos).exists():
        return None
    wider = replace(encoder, readout="cls+grid")
    fingerprint = encoder_fingerprint(wider, weights_digest(wider))
    path = default_cache_path(demos, fingerprint)
    return path if _cache_is_current(path, demos, fingerprint) else None
