"""Linear probes: how much of the privileged state a frozen feature holds, without training a policy.

A ridge regression (closed form, standardized inputs and targets, ridge strength picked by validation on
the train split) maps features ``(T, F)`` to each target (cube position, fingertip position, gripper
opening); frames are split into train and test **by episode**, so neighbouring frames of one episode never
sit on both sides. Reported per target: held-out R² (1 - residual / total sum of squares over the target's
dimensions) and the error in cm (mean Euclidean distance for positions, mean absolute error for the
gripper opening).

The reconstruction probe (``reconstruct``) asks the S² paper's representation question: how well does a ridge map
from one encoder's features (say the small model with S²) reconstruct another's (the larger model's) on held-out
episodes? Reported as R² per target dimension, averaged over the dimensions.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2robot.common.checks import check_seed
from s2robot.data.store import EpisodeStore
from s2robot.sim.env import check_variation
from s2robot.sim.frames import LABELS, FrameDataConfig, LabeledFrames, generate_frames, read_labeled
from s2robot.vision.encoder import EncoderConfig, EncoderPlacement, FrozenS2Encoder
from s2robot.vision.s2 import s2_forward

ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


@dataclass(frozen=True)
class Ridge:
    """A fitted linear map ``y = ((x - x_mean) / x_std) @ weight * y_std + y_mean``."""

    x_mean: np.ndarray  # (F,)
    x_std: np.ndarray  # (F,)
    y_mean: np.ndarray  # (d,)
    y_std: np.ndarray  # (d,)
    weight: np.ndarray  # (F, d)
    alpha: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(T, F) → (T, d)."""
        return ((x - self.x_mean) / self.x_std) @ self.weight * self.y_std + self.y_mean


def _solve(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """argmin_W |xW - y|² + alpha |W|², in the primal (F ≤ T) or dual (F > T) form; (F, d)."""
    t, f = x.shape
    if f <= t:
        return np.linalg.solve(x.T @ x + alpha * np.eye(f), x.T @ y)
    return x.T @ np.linalg.solve(x @ x.T + alpha * np.eye(t), y)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> Ridge:
    """Closed-form ridge on standardized ``x`` (T, F) and ``y`` (T, d), in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"need x (T, F) and y (T, d) with the same T; got {x.shape} and {y.shape}")
    x_mean, x_std = x.mean(0), x.std(0) + 1e-8
    y_mean, y_std = y.mean(0), y.std(0) + 1e-8
    w = _solve((x - x_mean) / x_std, (y - y_mean) / y_std, alpha)
    return Ridge(x_mean, x_std, y_mean, y_std, w, alpha)


def fit_ridge_cv(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas: tuple[float, ...] = ALPHAS, val_frac: float = 0.2
) -> Ridge:
    """Ridge with ``alpha`` chosen on a validation split of the groups (episodes), then refit on all."""
    train, val = split_groups(groups, val_frac, seed=1)
    if len(val) == 0 or len(alphas) == 1:
        return fit_ridge(x, y, alphas[0])
    scale = y[train].std(0) + 1e-8
    errors = [(((fit_ridge(x[train], y[train], a).predict(x[val]) - y[val]) / scale) ** 2).mean() for a in alphas]
    return fit_ridge(x, y, alphas[int(np.argmin(errors))])


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """1 - SS_res / SS_tot, both summed over all dimensions of the target."""
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    ss_tot = ((y - y.mean(0)) ** 2).sum()
    return float(1.0 - ((y - pred) ** 2).sum() / max(ss_tot, 1e-12))


def error_cm(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean Euclidean error [cm] of (T, d) predictions in metres (absolute error when d = 1)."""
    return float(100 * np.linalg.norm(np.asarray(y, np.float64) - pred, axis=1).mean())


def split_groups(groups: np.ndarray, test_frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices (train, test): a random ``test_frac`` of the groups (episodes) is held out whole."""
    ids = np.unique(groups)
    n_test = round(test_frac * len(ids))
    if len(ids) >= 2:
        n_test = min(max(n_test, 1), len(ids) - 1)
    held = np.random.default_rng(seed).permutation(ids)[:n_test]
    test = np.isin(groups, held)
    return np.flatnonzero(~test), np.flatnonzero(test)


def probe(
    features: np.ndarray,
    labels: dict[str, np.ndarray],
    groups: np.ndarray,
    test_frac: float = 0.25,
    alphas: tuple[float, ...] = ALPHAS,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Fit one ridge probe per target on the train episodes; ``{target: {r2, err_cm, alpha}}`` on the test ones."""
    if len(features) != len(groups) or any(len(v) != len(features) for v in labels.values()):
        raise ValueError(f"features ({len(features)}), groups ({len(groups)}) and labels "
                         f"({ {k: len(v) for k, v in labels.items()} }) must have one row per frame")
    train, test = split_groups(groups, test_frac, seed)
    if len(test) == 0:
        raise ValueError(f"need frames from ≥ 2 episodes to hold some out; got {len(np.unique(groups))}")
    results = {}
    for name, y in labels.items():
        y = y.reshape(len(y), -1)
        model = fit_ridge_cv(features[train], y[train], groups[train], alphas)
        pred = model.predict(features[test])
        results[name] = {"r2": r2_score(y[test], pred), "err_cm": error_cm(y[test], pred), "alpha": model.alpha}
    return results


def reconstruction_r2(
    source: np.ndarray,
    target: np.ndarray,
    groups: np.ndarray,
    test_frac: float = 0.25,
    alphas: tuple[float, ...] = ALPHAS,
    seed: int = 0,
) -> dict[str, float]:
    """Ridge ``source`` (T, Fs) → ``target`` (T, Ft) fit on the train episodes; on the held-out ones, R² of each
    target dimension (1 - SS_res / SS_tot of that dimension) averaged over the dimensions (``r2``), their median,
    and the ridge strength. Dimensions constant on the held-out frames (SS_tot ≈ 0) are left out; when every one
    is, R² is undefined and this raises ``ValueError``.
    """
    if len(source) != len(target) or len(source) != len(groups):
        raise ValueError(f"source ({len(source)}), target ({len(target)}) and groups ({len(groups)}) must have one "
                         "row per frame")
    train, test = split_groups(groups, test_frac, seed)
    if len(test) == 0:
        raise ValueError(f"need frames from ≥ 2 episodes to hold some out; got {len(np.unique(groups))}")
    y = np.asarray(target, np.float64).reshape(len(target), -1)
    model = fit_ridge_cv(source[train], y[train], groups[train], alphas)
    pred = model.predict(np.asarray(source[test], np.float64))  # (T_test, Ft)
    ss_tot = ((y[test] - y[test].mean(0)) ** 2).sum(0)  # (Ft,)
    ss_res = ((y[test] - pred) ** 2).sum(0)
    keep = ss_tot > 1e-12 * max(float(ss_tot.max()), 1e-30)
    if not keep.any():
        raise ValueError(f"every one of the {y.shape[1]} target dimensions is constant on the held-out frames, so "
                         "R² is undefined: the target features do not vary (a dead encoder, or identical frames)")
    r2 = 1.0 - ss_res[keep] / ss_tot[keep]
    return {"r2": float(r2.mean()), "r2_median": float(np.median(r2)), "dims": int(keep.sum()), "alpha": model.alpha}


@torch.inference_mode()
def encode_readouts(
    encoder: FrozenS2Encoder, frames: np.ndarray, readouts: list[str], batch_size: int = 32
) -> dict[str, np.ndarray]:
    """Features (T, F_r) of ``frames`` for several readouts, running the S² ViT once per frame."""
    cfg = encoder.cfg
    out: dict[str, list[np.ndarray]] = {r: [] for r in readouts}
    for i in range(0, len(frames), batch_size):
        x = encoder.preprocess(frames[i : i + batch_size])  # (B, 3, S, S)
        tokens = s2_forward(
            lambda t: encoder.vit(t.to(encoder.dtype)),
            x,
            img_sizes=encoder.img_sizes,
            max_split_size=cfg.tile_size(),
            resize_output_to_idx=cfg.resize_output_to_idx,
            num_prefix_token=encoder.vit.num_prefix_tokens,
            max_batch=cfg.max_batch,
        ).float()  # (B, 1+h*w, D*K)
        for readout in readouts:
            encoder.cfg = replace(cfg, readout=readout)  # the encoder's own readout code, for each readout
            try:
                out[readout].append(encoder.readout(tokens).cpu().numpy())
            finally:
                encoder.cfg = cfg
    return {r: np.concatenate(v) for r, v in out.items()}


def markdown_table(rows: list[dict[str, Any]], targets: list[str]) -> str:
    """One line per (encoder, readout): R² and error [cm] per target."""
    head = ["encoder", "weights", "scales", "readout", "F"]
    lines = ["| " + " | ".join(head + [f"{t} R² / cm" for t in targets]) + " |",
             "|" + "---|" * (len(head) + len(targets))]
    for row in rows:
        cells = [str(row[k]) for k in head]
        cells += [f"{row['targets'][t]['r2']:.3f} / {row['targets'][t]['err_cm']:.2f}" for t in targets]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reconstruction_table(rows: list[dict[str, Any]]) -> str:
    """One line per (source → target, readout): R² averaged over the target's dimensions (first split, and mean and
    range over the episode splits) and its median over the dimensions."""
    lines = ["| source → target (ridge, held-out episodes) | readout | dims | R² mean over dims | "
             "over splits: mean (min–max) | R² median over dims |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['source']} → {r['target']} | {r['readout']} | {r['source_dim']} → {r['dims']} | "
                     f"{r['r2']:.3f} | {r['r2_mean']:.3f} ({r['r2_min']:.3f}–{r['r2_max']:.3f}), "
                     f"{len(r['r2_splits'])} splits | {r['r2_median']:.3f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the script
@dataclass
class ProbeConfig:
    """``scripts/probe_features.py``. Hydra: ``configs/probe_features.yaml``.

    encoders: encoder preset names (``ENCODER_PRESETS``, s2robot/vision/presets.py); missing weights → listed as skipped
    readouts: readouts probed for each encoder (``cls``, ``mean``, ``cls+grid``)
    data: labeled frames: generated (``data.generator``) and/or generated stores (demo stores have no labels)
    test_frac: share of episodes held out for scoring
    batch_size: frames per encoder call
    placement: device, dtype and max batch of every encoder (``EncoderPlacement``; None fields: each preset's)
    grid_size: the ``cls+grid`` readout's grid side for every encoder (None: each preset's)
    threads: torch CPU threads; None = torch's default
    reconstruct: pairs ``[source, target]`` of ``encoders``: how well a ridge map from the source's features
        reconstructs the target's, per readout (e.g. ``[vitti_s2_mae, vits_mae]``: small model with S² → larger)
    reconstruct_splits: each reconstruction is scored on this many random episode splits (mean, min–max)
    variations: scene variations (``envs.variation``) to probe under: the generator renders the same episodes (cube
        placements, arm motion) in each varied scene, and every probe is scored on that scene's held-out episodes
        twice: fit on the scene as built (does the clean readout transfer?) and fit on the varied scene itself (is
        the information still in the features?). Needs generated frames (``data.generator.n_frames > 0``)
    out: JSON results path (the markdown table goes next to it as ``.md``)
    """

    encoders: list[str] = field(default_factory=lambda: ["vitti_random", "vitti_mae"])
    readouts: list[str] = field(default_factory=lambda: ["cls", "mean", "cls+grid"])
    data: FrameDataConfig = field(default_factory=FrameDataConfig)
    test_frac: float = 0.25
    seed: int = 0
    batch_size: int = 32
    placement: EncoderPlacement = field(default_factory=EncoderPlacement)
    grid_size: int | None = None
    threads: int | None = None
    reconstruct: list[list[str]] = field(default_factory=list)
    reconstruct_splits: int = 3
    variations: list[str] = field(default_factory=list)
    out: str = "runs/probe/probe.json"

    def __post_init__(self) -> None:
        for spec in self.variations:
            check_variation(spec)
        if self.variations and (self.data.stores or self.data.generator.n_frames <= 0):
            raise ValueError("variations= probes generated frames rendered again in each varied scene: set "
                             "data.generator.n_frames > 0 and no data.stores")
        bad = [p for p in self.reconstruct if len(p) != 2 or p[0] == p[1] or not set(p) <= set(self.encoders)]
        if self.reconstruct_splits < 1:
            raise ValueError(f"reconstruct_splits must be ≥ 1, got {self.reconstruct_splits}")
        check_seed(self.seed)  # splits episodes with numpy (split_groups)
        if bad:
            raise ValueError(f"reconstruct pairs must be [source, target], two different names of encoders "
                             f"{self.encoders}; got {bad}")


def transfer_probe(clean: np.ndarray, varied: np.ndarray, labels: dict[str, np.ndarray], groups: np.ndarray,
                   test_frac: float = 0.25, seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """Probes of the same frames in two scenes (rows aligned: the same episodes and steps): on the varied scene's
    held-out episodes, one fit on the clean scene's training episodes (``transfer``) and one on the varied scene's
    (``within``); ``{target: {"transfer": {r2, err_cm}, "within": {...}}}``."""
    if clean.shape[0] != varied.shape[0] or clean.shape[0] != len(groups):
        raise ValueError(f"clean ({clean.shape[0]}) and varied ({varied.shape[0]}) frames must be the same episodes, "
                         f"one row per frame ({len(groups)} groups)")
    train, test = split_groups(groups, test_frac, seed)
    out = {}
    for name, y in labels.items():
        y = y.reshape(len(y), -1)
        scores = {}
        for kind, x in (("transfer", clean), ("within", varied)):
            pred = fit_ridge_cv(x[train], y[train], groups[train]).predict(varied[test])
            scores[kind] = {"r2": r2_score(y[test], pred), "err_cm": error_cm(y[test], pred)}
        out[name] = scores
    return out


def variation_table(rows: list[dict[str, Any]], targets: list[str]) -> str:
    """One line per (encoder, readout, variation): R² / cm of each target fit on clean frames, then on varied ones."""
    lines = ["| encoder | readout | variation | " + " | ".join(f"{t}: fit clean → R² / cm | fit varied → R² / cm"
                                                         for t in targets) + " |",
             "|" + "---|" * (3 + 2 * len(targets))]
    for r in rows:
        cells = [f"{r['targets'][t][k]['r2']:.3f} / {r['targets'][t][k]['err_cm']:.2f}" for t in targets
                 for k in ("transfer", "within")]
        lines.append(f"| {r['encoder']} | {r['readout']} | {r['variation']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reconstruction_row(source: np.ndarray, target: np.ndarray, groups: np.ndarray, cfg: ProbeConfig, src: str,
                       tgt: str, readout: str) -> dict[str, Any]:
    """``reconstruction_r2`` on ``cfg.reconstruct_splits`` episode splits (seeds ``cfg.seed`` …): the first split's
    numbers, and the mean, min and max of ``r2`` over the splits (how much the split alone moves it)."""
    runs = [reconstruction_r2(source, target, groups, cfg.test_frac, seed=cfg.seed + k)
            for k in range(cfg.reconstruct_splits)]
    r2 = [r["r2"] for r in runs]
    return {"source": src, "target": tgt, "readout": readout, "source_dim": source.shape[1], **runs[0],
            "r2_splits": r2, "r2_mean": float(np.mean(r2)), "r2_min": min(r2), "r2_max": max(r2)}


def load_labeled(cfg: FrameDataConfig, progress: bool = True) -> LabeledFrames:
    """Labeled frames of ``cfg``'s stores and generator, episodes numbered across sources."""
    paths = list(cfg.stores)
    if cfg.generator.n_frames > 0:
        paths.append(str(generate_frames(cfg.generator, progress)))
    if not paths:
        raise ValueError("no labeled frames: set data.generator.n_frames > 0 (or give generated stores)")
    parts = [read_labeled(p, cfg.camera, cfg.max_frames_per_store) for p in paths]
    offsets = np.cumsum([0] + [int(p.episodes.max()) + 1 for p in parts[:-1]])
    return LabeledFrames(
        np.concatenate([p.frames for p in parts]),
        {k: np.concatenate([p.labels[k] for p in parts]) for k in LABELS},
        np.concatenate([p.episodes + o for p, o in zip(parts, offsets, strict=True)]),
    )


def _load_varied(cfg: ProbeConfig, data: LabeledFrames, progress: bool) -> dict[str, LabeledFrames]:
    """{variation: ``data``'s episodes rendered in its scene}, an explicit generator ``out`` store's sibling each."""
    gen = cfg.data.generator
    if cfg.variations and gen.n_frames > 0:  # a bigger store of the same frames is reused as it is: render the
        # varied scenes to its size, so both hold the same episodes and the same frames are drawn from each
        gen = replace(gen, n_frames=EpisodeStore.open(generate_frames(gen, progress)).n_steps)
    varied = {}
    for v in cfg.variations:
        out = gen.out and str(Path(gen.out).with_name(f"{Path(gen.out).stem}-{v.replace(':', '_')}.zarr"))
        varied[v] = load_labeled(replace(cfg.data, generator=replace(gen, variation=v, out=out)), progress)
    for v, d in varied.items():  # visual variations leave the episodes as they were: the labels must agree
        if not all(np.allclose(d.labels[k], data.labels[k], atol=1e-5) for k in LABELS):
            raise ValueError(f"variation {v!r} changed the episodes themselves (a physical factor): its frames "
                             "cannot be paired with the clean ones; probe visual variations")
    return varied


def run_probes(cfg: ProbeConfig, progress: bool = True) -> tuple[str, Path]:
    """Probe every encoder × readout on the same frames and split; returns the markdown table and JSON path."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = load_labeled(cfg.data, progress)
    varied = _load_varied(cfg, data, progress)
    variation_rows: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    features: dict[str, dict[str, np.ndarray]] = {}  # {encoder: {readout: (T, F)}}, for the reconstruction probe
    for name in cfg.encoders:
        try:
            grid = {} if cfg.grid_size is None else {"grid_size": cfg.grid_size}
            encoder = FrozenS2Encoder(cfg.placement.apply(EncoderConfig.from_name(name, **grid)))
        except FileNotFoundError as e:
            skipped.append({"encoder": name, "reason": str(e).split(". ")[0]})
            if progress:
                print(f"skipping {name}: {skipped[-1]['reason']}")
            continue
        t0 = time.perf_counter()
        feats = encode_readouts(encoder, data.frames, list(cfg.readouts), cfg.batch_size)
        seconds = time.perf_counter() - t0
        if any(name in pair for pair in cfg.reconstruct):
            features[name] = feats
        for v, d in varied.items():
            vfeats = encode_readouts(encoder, d.frames, list(cfg.readouts), cfg.batch_size)
            for readout, x in vfeats.items():
                variation_rows.append({"encoder": name, "readout": readout, "variation": v, "targets": transfer_probe(
                    feats[readout], x, data.labels, data.episodes, cfg.test_frac, cfg.seed)})
                if progress:
                    print(variation_table(variation_rows[-1:], list(LABELS)).splitlines()[-1], flush=True)
        weights = "random" if encoder.weights.is_random else Path(str(encoder.weights.path or "mvp")).stem
        for readout, x in feats.items():
            rows.append({
                "encoder": name, "weights": weights, "scales": "+".join(map(str, encoder.img_sizes)),
                "readout": readout, "F": x.shape[1], "encode_s": seconds,
                "targets": probe(x, data.labels, data.episodes, cfg.test_frac, seed=cfg.seed),
            })
            if progress:
                print(markdown_table(rows[-1:], list(LABELS)).splitlines()[-1], flush=True)
    recon = [reconstruction_row(features[src][r], features[tgt][r], data.episodes, cfg, src, tgt, r)
             for src, tgt in cfg.reconstruct if src in features and tgt in features for r in cfg.readouts]
    train, test = split_groups(data.episodes, cfg.test_frac, cfg.seed)
    table = markdown_table(rows, list(LABELS))
    if recon:
        table += "\n\nLinear reconstruction of one encoder's features from another's:\n\n" + reconstruction_table(recon)
    if variation_rows:
        table += ("\n\nThe same episodes in varied scenes, scored on their held-out episodes, probes fit on the clean "
                  "scene's frames and on the varied scene's:\n\n" + variation_table(variation_rows, list(LABELS)))
    if skipped:
        table += "\n\nskipped (weights not on this machine): " + ", ".join(s["encoder"] for s in skipped)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"rows": rows, "reconstruction": recon, "variations": variation_rows, "skipped": skipped,
               "n_frames": len(data), "n_train": len(train),
               "n_test": len(test), "n_episodes": len(np.unique(data.episodes)), "config": asdict(cfg)}
    out.write_text(json.dumps(summary, indent=2) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    return table, out
