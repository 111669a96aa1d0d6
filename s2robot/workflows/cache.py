"""The feature-cache workflow: encode a demo store once with a frozen encoder (``scripts/cache_features.py``),
and the cache that training reads, built by rank 0 when missing or stale."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from s2robot.common.distributed import DistInfo, barrier
from s2robot.data.features import (
    cache_location,
    ensure_feature_cache,
    ensure_views,
    views_are_complete,
)
from s2robot.data.views import ViewsConfig, views_cache_path
from s2robot.vision.encoder import EncoderConfig


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
    """Build (or resume, or reuse) the feature cache of ``cfg`` and, with ``views.n``, its shifted views; returns the
    cache's path. The same decision as training's (``ensure_feature_cache``)."""
    path, fingerprint = ensure_feature_cache(cfg.demos, cfg.encoder, cfg.out, cfg.batch_size, progress)
    print(f"encoder {cfg.encoder.variant} {cfg.encoder.resolved_img_sizes()} {cfg.encoder.readout}, fingerprint "
          f"{fingerprint}: {path}")
    if cfg.views.n:
        views = ensure_views(cfg.demos, path, cfg.encoder, cfg.views, cfg.batch_size, progress)
        print(f"{cfg.views.n} shifted view(s) of every frame (≤ {cfg.views.shift} px) in {views}")
    return path


def prepare_cache(demos: str, cache: str | None, encoder: EncoderConfig, batch_size: int = 256,
                  dist_info: DistInfo | None = None, progress: bool = True) -> tuple[Path, str]:
    """(path, encoder fingerprint) of the current feature cache for (demos, encoder): ``ensure_feature_cache`` on
    rank 0 (the one decision of reuse, cut or build), the others wait for it."""
    dist_info = dist_info or DistInfo()
    path, fingerprint = cache_location(demos, cache, encoder)  # on every rank: refuses before anyone waits
    if dist_info.is_main:
        ensure_feature_cache(demos, encoder, path, batch_size, progress)
    barrier(dist_info)
    return path, fingerprint


def prepare_views(demos: str, cache_path: Path, encoder: EncoderConfig, views: ViewsConfig, batch_size: int = 256,
                  dist_info: DistInfo | None = None, progress: bool = True) -> Path | None:
    """Path of the shifted views beside the (current) feature cache at ``cache_path`` (``s2robot.data.views``),
    ``ensure_views`` on rank 0; None when ``views.n`` is 0."""
    if not views.n:
        return None
    dist_info = dist_info or DistInfo()
    path = views_cache_path(cache_path, views)
    if not Path(demos).exists() and not views_are_complete(path, cache_path, views):  # on every rank
        raise FileNotFoundError(f"demo store {demos} does not exist, and the shifted views (views.n={views.n}) are "
                                "encoded from its frames: record the demos, or train with views.n=0")
    if dist_info.is_main:
        ensure_views(demos, cache_path, encoder, views, batch_size, progress)
    barrier(dist_info)
    return path
