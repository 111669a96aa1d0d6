"""Encoder comparison, like the S² paper's Table 6: the same demos and seeds through several frozen encoders.

``compare_encoders(cfg)`` records the demos once, then for every readout × training seed × encoder caches
features, trains the BC policy and evaluates it (``base.eval``: the 16 paper positions × 3 repeats by default),
and writes ``<out>/comparison.{json,md,png}``: per encoder and readout, params, GFLOPs per frame, optionally
linear-probe R² / error of the cube and fingertip positions on held-out rendered frames (``probe``), success
rate (mean and spread over seeds, Wilson 95% interval pooled over every episode of every seed), and the paired
difference from a ``reference`` encoder under the same readout, pooled over seeds, with its 95% interval.
Every step resumes: a re-run skips finished training, reuses an evaluation whose ``results.json`` is for the
same checkpoint step and evaluation settings, and reuses probe results of the same frames.
The rows, table and chart are ``workflows.compare_report``'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from s2robot.common.checks import check_seed
from s2robot.common.runlog import wandb_run
from s2robot.policy.checkpoint import read_parts
from s2robot.policy.configuration import EXECUTION_FIELDS
from s2robot.sim.frames import FrameDataConfig
from s2robot.vision.encoder import READOUTS, EncoderConfig, EncoderPlacement, FrozenS2Encoder, encoder_fingerprint
from s2robot.vision.weights import resolve_weights
from s2robot.workflows.compare_report import comparison_rows, format_comparison, plot_comparison
from s2robot.workflows.compare_robustness import write_robustness_comparison
from s2robot.workflows.evaluate import EvalConfig, evaluate
from s2robot.workflows.pipeline import PipelineConfig
from s2robot.workflows.probe import encode_readouts, load_labeled, probe
from s2robot.workflows.record import record_demos
from s2robot.workflows.robustness import RobustnessConfig, run_robustness
from s2robot.workflows.train import TrainConfig, train

PAPER_ENCODERS = ["mvp_vitb", "mvp_vitb_s2", "mvp_vitl"]
# Evaluation settings that change the outcome: a saved results.json is reused only if they match.
EVAL_KEYS = ("use_ema", "positions", "n_random_positions", "position_seed", "repeats", "held_out_repeats", "seed",
             "joint_noise", "max_steps")


@dataclass
class CompareConfig:
    """``scripts/compare_encoders.py`` (``configs/compare_encoders.yaml``).

    base: demos, training and evaluation shared by every run (``base.train.encoder`` is not used: the
        encoders come from ``encoders``); run names are ``<base.train.name>-<encoder>-s<seed>``, with
        ``-<readout>`` before ``-s<seed>`` when ``readouts`` is given
    encoders: encoder preset names (``ENCODER_PRESETS``, s2robot/vision/presets.py); default the paper's ViT-B 224²,
        ViT-B-S² 224²+448², ViT-L 256²
    seeds: training seeds (policy init, batches, train/val split); each encoder is trained once per seed
    readouts: every encoder is run under each of these readouts (``cls``, ``mean``, ``cls+grid``), one table row
        each; empty: each encoder's own (its yaml's)
    reference: an encoder of ``encoders``: every other row gets its paired success difference from this one
        under the same readout (episodes matched per training seed, pooled), with a 95% interval; None: no column
    probe: held-out labeled frames (rendered scenes, see ``scripts/probe_features.py``) for ridge probes of the
        cube and fingertip positions from each encoder × readout; ``probe.generator.n_frames=0``: no probes
    placement: device, dtype and max batch of every encoder (``EncoderPlacement``; None fields: each preset's)
    robustness: scene variations (``envs.variation`` specs) every run is also evaluated under, clean first, on
        ``robustness_positions`` held-out positions once each (``workflows.robustness``); the comparison then writes
        ``robustness.{md,json,png}``: which encoder keeps its success when the scene changes. Empty: none
    out: where ``comparison.{json,md,png}`` (and ``probes.json``) go
    """

    base: PipelineConfig = field(default_factory=PipelineConfig)
    encoders: list[str] = field(default_factory=lambda: list(PAPER_ENCODERS))
    seeds: list[int] = field(default_factory=lambda: [0])
    readouts: list[str] = field(default_factory=list)
    reference: str | None = None
    probe: FrameDataConfig = field(default_factory=FrameDataConfig)
    placement: EncoderPlacement = field(default_factory=EncoderPlacement)
    robustness: list[str] = field(default_factory=list)
    robustness_positions: int = 32
    out: str = "runs/compare"

    def __post_init__(self) -> None:
        if not self.encoders or len(set(self.encoders)) != len(self.encoders):
            raise ValueError(f"encoders must be a non-empty list of distinct names, got {self.encoders}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct ints, got {self.seeds}")
        for seed in self.seeds:
            check_seed(seed, "each of seeds (training seeds)")
        bad = [r for r in self.readouts if r not in READOUTS]
        if bad or len(set(self.readouts)) != len(self.readouts):
            raise ValueError(f"readouts must be distinct names of {list(READOUTS)}, got {self.readouts}")
        if self.reference is not None and self.reference not in self.encoders:
            raise ValueError(f"reference {self.reference!r} is not one of encoders {self.encoders}: add it to "
                             "encoders=[...] or set reference=null")
        if self.robustness:
            self.robustness_config("runs/x/checkpoints/last")  # refuses bad conditions before any work

    def encoder_config(self, name: str, readout: str | None = None) -> EncoderConfig:
        """The encoder preset ``name`` placed as ``placement`` says, with ``readout`` (None: the preset's)."""
        return self.placement.apply(EncoderConfig.from_name(name, **({"readout": readout} if readout else {})))

    def robustness_config(self, checkpoint: str) -> RobustnessConfig:
        """The perturbation suite every run of this comparison goes through (same episodes for every run)."""
        e = self.base.eval
        return RobustnessConfig(checkpoint=checkpoint, conditions=list(self.robustness), expert=False,
                                n_random_positions=self.robustness_positions, position_seed=e.position_seed,
                                seed=e.seed, joint_noise=e.joint_noise, max_steps=e.max_steps, n_envs=e.n_envs,
                                executing=e.executing, wandb=e.wandb, progress=e.progress)

    def readout_list(self) -> list[str | None]:
        """The readouts to run (None: each encoder's own)."""
        return list(self.readouts) or [None]

    def label(self, encoder: str, readout: str | None) -> str:
        """A row's name: the encoder, with the readout when several are compared."""
        return encoder if readout is None else f"{encoder} · {readout}"

    def run_name(self, encoder: str, seed: int, readout: str | None = None) -> str:
        slug = "" if readout is None else "-" + readout.replace("+", "_")
        return f"{self.base.train.name}-{encoder}{slug}-s{seed}"


def check_weights(cfg: CompareConfig) -> dict[str, EncoderConfig]:
    """Every encoder's config, with its weights resolved up front: a missing file fails before any work."""
    configs = {name: cfg.encoder_config(name) for name in cfg.encoders}
    missing = {}
    for name, enc in configs.items():
        try:
            resolve_weights(enc.variant, enc.weights, enc.seed, enc.allow_download)
        except FileNotFoundError as e:
            missing[name] = str(e)
    if missing:
        raise FileNotFoundError(
            f"missing weights for encoder(s) {list(missing)} (nothing was recorded or trained); drop them from "
            "encoders=[...] or provide their weights:\n" + "\n".join(f"- {n}: {msg}" for n, msg in missing.items()))
    return configs


def _saved_report(results: Path, checkpoint: Path, step: int, eval_cfg: EvalConfig) -> dict[str, Any] | None:
    """A run's saved ``results.json`` when it is for this checkpoint at this step with these settings, executed as
    ``eval_cfg.executing`` runs the checkpoint's policy."""
    if not results.is_file():
        return None
    try:
        report = json.loads(results.read_text())
    except json.JSONDecodeError:
        return None
    trained = read_parts(checkpoint)["config"]["policy"]
    ran = report.get("execution", trained)  # results from before it was recorded ran the checkpoint's
    runs = {**{k: trained[k] for k in EXECUTION_FIELDS}, **eval_cfg.executing.given()}
    same = (report.get("checkpoint") == str(checkpoint.resolve()) and report.get("checkpoint_step") == step
            and all(report.get("eval", {}).get(k) == getattr(eval_cfg, k) for k in EVAL_KEYS)
            and all(ran.get(k) == v for k, v in runs.items())
            and [tuple(p["cube_xy"]) for p in report.get("per_position", [])] == eval_cfg.position_set()[0])
    return report if same else None  # (the last check: a positions file that changed since)


def train_and_evaluate(train_cfg: TrainConfig, eval_cfg: EvalConfig, which: str = "last") -> dict[str, Any]:
    """Train (or resume) one run, then evaluate its ``which`` checkpoint unless its saved results are current."""
    last = train(train_cfg)
    ckpt = last if which == "last" else last.with_name("best")
    if not ckpt.is_dir():
        raise FileNotFoundError(f"{ckpt} does not exist: best/ is written only when validating "
                                "(base.train.val_fraction > 0); use base.evaluate_checkpoint=last")
    out = Path(eval_cfg.out) / train_cfg.name if eval_cfg.out else train_cfg.run_dir / "eval"
    eval_cfg = replace(eval_cfg, checkpoint=str(ckpt), out=str(out))
    step = read_parts(ckpt)["config"]["step"]
    report = _saved_report(out / "results.json", ckpt, step, eval_cfg)
    if report is not None:
        print(f"evaluation of {ckpt} at step {step} is up to date: reusing {out / 'results.json'}")
        return report
    return evaluate(eval_cfg)


def probe_rows(cfg: CompareConfig, progress: bool = True) -> dict[str, dict[str, dict[str, float]]]:
    """Ridge probes of every encoder × readout on ``cfg.probe``'s held-out frames: {row label: {target: result}}.

    Results are kept in ``<out>/probes.json`` with the frames' key and each row's encoder fingerprint (weights,
    scales, readout); a re-run encodes only what is missing or was probed with another encoder.
    """
    gen = cfg.probe.generator
    if gen.n_frames <= 0:
        if cfg.probe.stores:
            print(f"probes: none (probe.generator.n_frames=0; probe.stores {cfg.probe.stores} hold no labels alone)")
        return {}
    key = {"generator": gen.key(), "n_frames": gen.n_frames, "stores": list(cfg.probe.stores),
           "max_frames_per_store": cfg.probe.max_frames_per_store, "camera": cfg.probe.camera}
    path = Path(cfg.out) / "probes.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    fingerprints = {cfg.label(n, r): encoder_fingerprint(cfg.encoder_config(n, r))
                    for n in cfg.encoders for r in cfg.readout_list()}
    same = saved.get("key") == key
    done = {label: row for label, row in saved.get("rows", {}).items()
            if same and saved.get("fingerprints", {}).get(label) == fingerprints.get(label)}
    todo = [(n, r) for n in cfg.encoders for r in cfg.readout_list() if cfg.label(n, r) not in done]
    if todo:
        data = load_labeled(cfg.probe, progress)
        for name in dict.fromkeys(n for n, _ in todo):
            readouts = [r for n, r in todo if n == name]
            encoder = FrozenS2Encoder(cfg.encoder_config(name))
            names = [r or encoder.cfg.readout for r in readouts]
            t0 = time.perf_counter()
            features = encode_readouts(encoder, data.frames, names)
            print(f"probe: {name} encoded {len(data)} frames in {time.perf_counter() - t0:.0f} s")
            for r, readout in zip(readouts, names, strict=True):
                done[cfg.label(name, r)] = probe(features[readout], data.labels, data.episodes)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"key": key, "rows": done,  # after each encoder: resumable
                                        "fingerprints": {k: fingerprints[k] for k in done if k in fingerprints}},
                                       indent=2))
    return {cfg.label(n, r): done[cfg.label(n, r)] for n in cfg.encoders for r in cfg.readout_list()}


def _previous_seconds(path: Path) -> dict[str, float]:
    """{run name: wall seconds spent on it so far} from ``<out>/run_seconds.json``: a resumed comparison adds only
    the time it spends now, so the totals are the work's, not the last invocation's."""
    if not path.is_file():
        return {}
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return {}


def compare_encoders(cfg: CompareConfig) -> dict[str, Any]:
    """Record demos once, train and evaluate every readout × seed × encoder, write the comparison; returns its
    summary. Readouts run in the outer loop, then seeds, so a stopped comparison has every encoder at the same
    seeds."""
    configs = {(n, r): cfg.encoder_config(n, r) for n in check_weights(cfg) for r in cfg.readout_list()}
    b, t = cfg.base, cfg.base.train
    runs = [(name, seed, readout) for readout in cfg.readout_list() for seed in cfg.seeds for name in cfg.encoders]
    scene = f", scene variation {b.record.variation}" if b.record.variation != "none" else ""
    print(f"[1/4] demos: {t.demos} ({b.record.n_episodes} scripted-expert episodes at {t.env.image_size}²{scene})")
    record_demos(b.record_config(), progress=t.progress)
    print(f"[2/4] probes: {cfg.probe.generator.n_frames or 'none'} held-out rendered frames")
    probes = probe_rows(cfg, t.progress)
    reports: dict[str, dict[int, dict[str, Any]]] = {cfg.label(n, r): {} for r in cfg.readout_list()
                                                     for n in cfg.encoders}
    seconds_file = Path(cfg.out) / "run_seconds.json"
    seconds = _previous_seconds(seconds_file)
    robust: dict[str, dict[int, dict[str, Any]]] = {}  # {row label: {seed: {condition: results}}}
    for k, (name, seed, readout) in enumerate(runs, 1):
        run_cfg = replace(t, name=cfg.run_name(name, seed, readout), seed=seed, encoder=configs[name, readout])
        print(f"[3/4] run {k}/{len(runs)}: {run_cfg.name} (cache, train, evaluate checkpoints/{b.evaluate_checkpoint})")
        t0 = time.perf_counter()
        reports[cfg.label(name, readout)][seed] = report = train_and_evaluate(run_cfg, b.eval, b.evaluate_checkpoint)
        if cfg.robustness:
            suite = cfg.robustness_config(report["checkpoint"])
            suite.out = str(run_cfg.run_dir / "robustness")
            robust.setdefault(cfg.label(name, readout), {})[seed] = run_robustness(suite)["results"]
            write_robustness_comparison(Path(cfg.out), robust, cfg.reference, f"{t.name}: "
                                        f"{cfg.robustness_positions} held-out positions per training seed")
        seconds[run_cfg.name] = seconds.get(run_cfg.name, 0.0) + time.perf_counter() - t0
        seconds_file.parent.mkdir(parents=True, exist_ok=True)
        seconds_file.write_text(json.dumps(seconds, indent=2))  # after each run: a stopped comparison keeps them
        if k < len(runs):  # the table so far, so a stopped comparison still shows what it has
            write_comparison(cfg, reports, probes, runs[:k], seconds, partial=True)

    print(f"[4/4] comparison: {cfg.out}")
    result = write_comparison(cfg, reports, probes, runs, seconds)
    _log_wandb(cfg, result["rows"], Path(result["outputs"]["png"]))
    return result


def write_comparison(cfg: CompareConfig, reports: Mapping[str, Mapping[int, Mapping[str, Any]]],
                     probes: Mapping[str, Any], runs: Sequence[tuple[str, int, str | None]],
                     seconds: Mapping[str, float], partial: bool = False) -> dict[str, Any]:
    """Write ``<out>/comparison.{json,md,png}`` from the evaluations of ``runs`` ((encoder, seed, readout) done so
    far); rows without an evaluation yet are left out, and a row is paired only once its reference has one."""
    b, t = cfg.base, cfg.base.train
    reports = {label: dict(by_seed) for label, by_seed in reports.items() if by_seed}
    references = {cfg.label(n, r): cfg.label(cfg.reference, r) for n in cfg.encoders for r in cfg.readout_list()
                  if cfg.label(n, r) in reports and cfg.label(cfg.reference, r) in reports} if cfg.reference else {}
    rows = comparison_rows(reports, references, {k: v for k, v in probes.items() if k in reports})
    table = format_comparison(rows)
    if partial:
        table = (f"**Partial: {len(runs)} of {len(cfg.readout_list()) * len(cfg.seeds) * len(cfg.encoders)} runs "
                 "done** (re-run the same command to continue).\n\n" + table)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    outputs = {"json": out / "comparison.json", "md": out / "comparison.md", "png": out / "comparison.png"}
    summary = {"rows": rows, "config": asdict(cfg), "partial": partial,
               "runs": [{"encoder": n, "readout": r, "seed": s, "run": cfg.run_name(n, s, r),
                         "checkpoint": reports[cfg.label(n, r)][s]["checkpoint"],
                         "checkpoint_step": reports[cfg.label(n, r)][s]["checkpoint_step"],
                         "seconds": seconds.get(cfg.run_name(n, s, r))} for n, s, r in runs]}
    summary["run_seconds_total"] = sum(r["seconds"] or 0.0 for r in summary["runs"])
    outputs["json"].write_text(json.dumps(summary, indent=2))
    outputs["md"].write_text(table + "\n")
    plot_comparison(rows, outputs["png"], f"{t.name}: {b.record.n_episodes} demos, {t.steps} steps, seeds {cfg.seeds}"
                    + (" (partial)" if partial else ""))
    return {"rows": rows, "table": table, "outputs": {k: str(v) for k, v in outputs.items()}}


def _log_wandb(cfg: CompareConfig, rows: Sequence[Mapping[str, Any]], png: Path) -> None:
    run = wandb_run(cfg.base.train.wandb, f"{cfg.base.train.name}-compare", png.parent, asdict(cfg),
                    job_type="compare")
    if run is None:
        return
    import wandb

    columns = ["encoder", "variant", "scales", "params_m", "gflops_per_frame", "weights_random", "seeds",
               "success_mean", "success_std", "ci95_low", "ci95_high", "episodes", "paper_success"]
    data = [[r["encoder"], r["variant"], "+".join(map(str, r["img_sizes"])), r["params_m"], r["gflops_per_frame"],
             r["weights_random"], ",".join(map(str, r["seeds"])), r["success_mean"], r["success_std"], *r["ci95"],
             r["episodes"], r["paper_success"]] for r in rows]
    run.log({"compare/table": wandb.Table(columns=columns, data=data), "compare/chart": wandb.Image(str(png))})
    run.finish()
