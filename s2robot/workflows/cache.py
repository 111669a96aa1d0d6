"""The feature-cache workflow: encode a demo store once with a frozen encoder (``scripts/cache_features.py``),
and the cache that training reads, built when missing or stale. Under ``torchrun --nproc_per_node=N`` (one node or
several) every rank encodes a share of the episodes and rank 0 merges them (``s2robot.data.sharded_cache``): the same
cache as one process builds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from s2robot.common.distributed import DistInfo, barrier, distributed
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
    batch_size: frames per encoder call (raise it on a GPU); under torchrun also the unit of the ranks' shares, so
        a re-run resumes the finished shares only with the same batch_size (and number of ranks)
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
    cache's path. The same decision as training's (``prepare_cache``); under torchrun every rank takes a share (its
    GPU: ``LOCAL_RANK``, with ``encoder.device=auto``), and rank 0 prints the summary."""
    with distributed(cfg.encoder.device) as (info, _):
        path, fingerprint = prepare_cache(cfg.demos, cfg.out, cfg.encoder, cfg.batch_size, info, progress)
        if info.is_main:
            print(f"encoder {cfg.encoder.variant} {cfg.encoder.resolved_img_sizes()} {cfg.encoder.readout}, "
                  f"fingerprint {fingerprint}: {path}")
        views = prepare_views(cfg.demos, path, cfg.encoder, cfg.views, cfg.batch_size, info, progress)
        if views is not None and info.is_main:
            print(f"{cfg.views.n} shifted view(s) of every frame (≤ {cfg.views.shift} px) in {views}")
    return path


def prepare_cache(demos: str, cache: str | None, encoder: EncoderConfig, batch_size: int = 256,
                  dist_info: DistInfo | None = None, progress: bool = True) -> tuple[Path, str]:
    """(path, encoder fingerprint) of the current feature cache for (demos, encoder): ``ensure_feature_cache`` on every
    rank (rank 0 makes the one decision of reuse, cut or build; every rank encodes a share of a build)."""
    dist_info = dist_info or DistInfo()
    path, fingerprint = cache_location(demos, cache, encoder)  # on every rank: refuses before anyone waits
    ensure_feature_cache(demos, encoder, path, batch_size, progress, dist_info)
    barrier(dist_info)
    return path, fingerprint


def prepare_views(demos: str, cache_path: Path, encoder: EncoderConfig, views: ViewsConfig, batch_size: int = 256,
                  dist_info: DistInfo | None = None, progress: bool = True) -> Path | None:
    """Path of the shifted views beside the (current) feature cache at ``cache_path`` (``s2robot.data.views``),
    ``ensure_views`` on every rank (as ``prepare_cache``); None when ``views.n`` is 0."""
    if not views.n:
        return None
    dist_info = dist_info or DistInfo()
    path = views_cache_path(cache_path, views)
    if not Path(demos).exists() and not views_are_complete(path, cache_path, views):  # on every rank
        raise FileNotFoundError(f"demo store {demos} does not exist, and the shifted views (views.n={views.n}) are "
                                "encoded from its frames: record the demos, or train with views.n=0")
    ensure_views(demos, cache_path, encoder, views, batch_size, progress, dist_info)
    barrier(dist_info)
    return path
