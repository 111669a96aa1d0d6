"""Policy checkpoints from the shell: ``python -m s2robot.workflows.checkpoint {convert,show,recover,card} PATH``;
and an evaluation's numbers onto the model card of the checkpoint it evaluated (``record_on_card``)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from s2robot.common.atomic import replacing
from s2robot.policy.checkpoint import CARD, FORMAT_VERSION, read_parts, record_evaluation, recover
from s2robot.policy.convert import convert_folder, convert_legacy
from s2robot.policy.model_card import card_evaluations, card_metadata, is_model_card, model_card
from s2robot.workflows.report import wilson_interval


def _reads_as_other_type(text: str) -> bool:
    """Whether hydra would read the bare word ``text`` as a number, bool or null rather than a string."""
    try:
        float(text)
    except ValueError:
        return text.lower() in ("true", "false", "null")
    return True


def _override_value(value: Any) -> str:
    """``value`` as hydra's override grammar reads it back (null, true, lists as JSON, odd strings quoted)."""
    if value is None or isinstance(value, bool | int | float | list | tuple):
        return json.dumps(list(value) if isinstance(value, tuple) else value, separators=(",", ":"))
    text = str(value)
    if text and all(c.isalnum() or c in "_-./:+~@" for c in text) and not _reads_as_other_type(text):
        return text
    # hydra's quoted strings: backslashes escape only a quote or the closing quote, so only those runs double
    return '"' + re.sub(r'(\\*)("|$)', lambda m: m[1] * 2 + ("\\" + m[2] if m[2] else ""), text) + '"'


def command_line(script: str, cfg: Any) -> str:
    """The shell command that runs ``script`` (a hydra entry point) with the dataclass config ``cfg`` (whose class
    constructs with no arguments): one ``key=value`` override per field that differs from the class's default
    (nested fields as ``a.b=``)."""
    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
        return out

    defaults = flat(asdict(type(cfg)()))
    overrides = [f"{k}={_override_value(v)}" for k, v in flat(asdict(cfg)).items()
                 if k not in defaults or defaults[k] != v]
    return shlex.join(["python", script, *overrides])


def evaluation_entry(report: Mapping[str, Any], parts: Mapping[str, Any], command: str) -> dict[str, Any]:
    """What the model card keeps of an evaluation (``policy.model_card.evaluation_section``): ``report`` is
    ``evaluate``'s results dict, ``parts`` the evaluated checkpoint's; intervals are Wilson 95% of the counts."""
    sets = [{"set": s["set"], "positions": s["positions"], "successes": s["successes"], "episodes": s["episodes"],
             "ci95": list(wilson_interval(s["successes"], s["episodes"]))} for s in report.get("sets") or ()]
    ema = parts["config"].get("ema")
    use_ema = (report.get("eval") or {}).get("use_ema", True)
    weights = ("raw weights from training_state.pt (not model.safetensors)" if ema and not use_ema
               else f"model.safetensors ({'EMA' if ema else 'raw'})")
    return {"out": str(report["outputs"]["dir"]), "successes": report["successes"], "episodes": report["episodes"],
            "ci95": list(wilson_interval(report["successes"], report["episodes"])), "sets": sets,
            "variation": report.get("variation", "none"), "checkpoint_step": report.get("checkpoint_step"),
            "weights": weights, "weights_sha256": (parts["config"].get("weights_file") or {}).get("sha256"),
            "command": command}


def record_on_card(checkpoint: str | Path, parts: Mapping[str, Any], report: Mapping[str, Any], command: str) -> str:
    """Record the evaluation ``report`` of ``checkpoint`` (loaded with ``parts``) on its model card; a one-line note.
    The results are written already: a card that cannot be updated is a note, never an error."""
    try:
        return record_evaluation(checkpoint, evaluation_entry(report, parts, command))
    except (OSError, ValueError) as e:
        return (f"model card of {checkpoint} not updated ({type(e).__name__}: {e}); the results are in "
                f"{report['outputs']['dir']}")


def write_card(directory: Path, license: str | None = None) -> Path:
    """Re-render the model card of a format-3 checkpoint folder from its parts, keeping its recorded evaluations
    and (unless ``license`` is given) its license."""
    parts = read_parts(directory)
    if parts["config"].get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory} is a format-{parts['config'].get('format_version')} checkpoint; convert it "
                         f"first: python -m s2robot.workflows.checkpoint convert {directory} --out NEW_FOLDER")
    card = directory / CARD
    text = card.read_text() if card.is_file() else ""
    if text and not is_model_card(text):
        raise ValueError(f"{card} is not an s2robot model card; move it out of the checkpoint folder first")
    with replacing(card) as tmp:
        tmp.write_text(model_card(parts, card_evaluations(text), license or card_metadata(text).get("license")))
    return card


def _convert(path: Path, out: Path | None) -> Path:
    return convert_folder(path, out) if path.is_dir() else convert_legacy(path, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2robot.workflows.checkpoint", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("convert", help="convert a format-1 last.pt/best.pt, or a format-2 folder (model.pt), "
                                          "into a new checkpoint folder of the current format")
    conv.add_argument("path", type=Path)
    conv.add_argument("--out", type=Path, default=None,
                      help="new folder to write (default: the file without .pt, or the folder's name + '-v3'); an "
                           "existing one is refused")
    show = sub.add_parser("show", help="print a checkpoint folder's config parts")
    show.add_argument("path", type=Path)
    rec = sub.add_parser("recover", help="finish a checkpoint save that a crash interrupted (training does this too)")
    rec.add_argument("path", type=Path)
    card = sub.add_parser("card", help="re-render a checkpoint folder's model card (README.md), keeping its "
                                       "evaluations")
    card.add_argument("path", type=Path)
    card.add_argument("--license", default=None, help="license id for the card's front matter, e.g. mit")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "convert":
            print(_convert(args.path, args.out))
        elif args.cmd == "recover":
            print("\n".join(recover(args.path)) or f"{args.path}: no interrupted save found")
        elif args.cmd == "card":
            print(write_card(args.path, args.license))
        else:
            print(json.dumps({k: v for k, v in read_parts(args.path).items() if k != "normalizer"}, indent=2))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
