"""The model card of a checkpoint folder (``README.md``): what the policy reads, what it was trained on and how, and
the success each evaluation of it measured.

The card is markdown with the YAML front matter of a Hugging Face model card (``huggingface_hub.ModelCard``:
``library_name``, ``tags``, optional ``license``), rendered from the checkpoint's JSON parts by pure functions. Each
evaluation is one section, keyed by its output folder, that carries its numbers as a one-line JSON comment, so a
later evaluation re-renders the card with the earlier sections kept (``with_evaluation``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

CARD = "README.md"
LIBRARY = "s2robot"
TAGS = ("robotics", "behavior-cloning", "s2", "imitation-learning")
_RECORD = "<!-- s2robot:evaluation "  # + one line of JSON + " -->": an evaluation's numbers, read back on update
_END = " -->"


def model_card(parts: Mapping[str, Any], evaluations: Sequence[Mapping[str, Any]] = (),
               license: str | None = None) -> str:
    """The card's markdown for a checkpoint's JSON ``parts`` (``config``, ``encoder``, ``env``) and its
    ``evaluations`` (see ``evaluation_section`` for the keys), in order; ``license``: an SPDX-style id for the front
    matter (e.g. ``mit``), left out when None."""
    config = parts["config"]
    enc = _encoder_facts(parts)
    meta: dict[str, Any] = {"library_name": LIBRARY, "tags": [*TAGS, *_extra_tags(parts, enc)]}
    if license:
        meta["license"] = license
    front = "---\n" + yaml.safe_dump(meta, sort_keys=False).strip() + "\n---"
    run = config.get("run") or {}
    name = run.get("name") or "policy"
    intro = (f"# {name}: an s2robot behavior-cloning policy\n\nA chunk transformer that reads frozen "
             f"{enc['variant']} features (S² scales {enc['scales']}) of {', '.join(_cameras(config))}, "
             "proprioception and its past actions, and predicts the next chunk of actions. Checkpoint at step "
             f"{config.get('step')}{_of_steps(run)}; weights: {'EMA' if config.get('ema') else 'raw (no EMA)'}; "
             f"checkpoint format {config.get('format', 's2robot.policy')} v{config.get('format_version', '?')}.")
    sections = [front, intro, _usage(), _encoder_section(enc), _demos_section(config), _recipe_section(config),
                _success_section(evaluations)]
    return "\n\n".join(sections) + "\n"


def _extra_tags(parts: Mapping[str, Any], enc: Mapping[str, Any]) -> list[str]:
    env_id = (parts.get("env") or {}).get("id")
    tags = [str(enc["variant"])] + ([str(env_id)] if env_id else [])
    return [t for t in dict.fromkeys(tags) if t not in TAGS and t != "?"]


def _cameras(config: Mapping[str, Any]) -> list[str]:
    dims = (config.get("shape") or {}).get("feature_dims") or {}
    return [f"camera {k.removeprefix('feat_')}" for k in dims] or ["its cameras"]


def _of_steps(run: Mapping[str, Any]) -> str:
    return f" of {run['steps']}" if run.get("steps") is not None else ""


def _usage() -> str:
    return ("## Use\n\n```python\nfrom s2robot.policy.checkpoint import from_pretrained\n\n"
            "policy, parts = from_pretrained(\"path/to/this/folder\")  # or a Hub repo id in the local HF cache\n"
            "```\n\nEvaluate it in simulation: `python scripts/eval.py checkpoint=path/to/this/folder`. The folder "
            "is a Hugging Face model repo as it stands (`huggingface_hub.upload_folder(repo_id=..., folder_path=..., "
            "ignore_patterns=[\"training_state.pt\"])`; `training_state.pt` is only for resuming training).")


def _encoder_facts(parts: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder as the run described it (``encoder.json``'s ``describe``), else as its config says."""
    part = parts.get("encoder") or {}
    desc, cfg = part.get("describe") or {}, part.get("config") or {}
    sizes = desc.get("img_sizes") or cfg.get("img_sizes")
    scales = ("none: privileged state, not vision" if desc.get("privileged") else
              " + ".join(f"{s}²" for s in sizes) if sizes else
              f"{cfg['scales']} × the model's size" if cfg.get("scales") else "the model's own size (single scale)")
    dims = ((parts.get("config") or {}).get("shape") or {}).get("feature_dims") or {}
    feature_dim = desc.get("feature_dim") or (", ".join(f"{v} ({k})" for k, v in dims.items()) if dims else None)
    return {"variant": desc.get("variant") or cfg.get("variant") or "?", "weights": desc.get("weights") or
            cfg.get("weights"), "weights_digest": desc.get("weights_digest"), "scales": scales,
            "readout": desc.get("readout") or cfg.get("readout"), "feature_dim": feature_dim,
            "fingerprint": part.get("fingerprint"), "random": desc.get("weights_random")}


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    return "\n".join(["| | |", "| --- | --- |", *(f"| {k} | {_cell(v)} |" for k, v in rows)])


def _cell(value: Any) -> str:
    return "unknown" if value is None or value == "" else str(value).replace("|", "\\|")


def _encoder_section(enc: Mapping[str, Any]) -> str:
    weights = enc["weights"] if not enc["random"] else f"{enc['weights']} — RANDOM, not pretrained"
    return "## Encoder (frozen)\n\n" + _table([
        ("variant", f"`{enc['variant']}`"), ("weights", weights), ("weights digest (sha256)", enc["weights_digest"]),
        ("S² scales", enc["scales"]), ("readout", enc["readout"]), ("feature dim", enc["feature_dim"]),
        ("encoder fingerprint", enc["fingerprint"])])


def _demos_section(config: Mapping[str, Any]) -> str:
    demos, run, cache = config.get("demos") or {}, config.get("run") or {}, config.get("cache") or {}
    return "## Demos\n\n" + _table([
        ("path", demos.get("path") or run.get("demos")), ("fingerprint", demos.get("fingerprint") or
                                                         cache.get("source")),
        ("episodes", demos.get("episodes")), ("steps", demos.get("steps"))])


def _recipe_section(config: Mapping[str, Any]) -> str:
    run = config.get("run") or {}
    keys = ("steps", "batch_size", "lr", "weight_decay", "warmup_steps", "ema_decay", "val_fraction", "seed")
    rows = [(f"`{k}`", run[k]) for k in keys if k in run]
    policy = json.dumps(config.get("policy") or {}, indent=2)
    return (f"## Recipe\n\n{_table([*rows, ('checkpoint step', config.get('step'))])}\n\nPolicy config:\n\n"
            f"```json\n{policy}\n```\n\nThe run's full training config is `run` in `config.json`.")


def _success_section(evaluations: Sequence[Mapping[str, Any]]) -> str:
    head = "## Measured success"
    if not evaluations:
        return (f"{head}\n\nNot evaluated yet. `python scripts/eval.py checkpoint=path/to/this/folder` adds a section "
                "here: the success rate with its Wilson 95% interval, the episode count and the command.")
    return head + "\n\n" + "\n\n".join(evaluation_section(e) for e in evaluations)


def _rate(k: int, n: int, ci95: Sequence[float]) -> str:
    return (f"{100 * k / n if n else 0:.1f}% ({k}/{n} episodes, Wilson 95% CI {100 * ci95[0]:.1f}–"
            f"{100 * ci95[1]:.1f}%)")


def evaluation_section(e: Mapping[str, Any]) -> str:
    """One evaluation on the card. ``e``: ``out`` (its output folder: the section's key), ``successes``,
    ``episodes``, ``ci95`` [lo, hi], ``sets`` (per position set: ``set``, ``positions``, ``successes``,
    ``episodes``, ``ci95``), ``variation``, ``checkpoint_step``, ``weights`` (what ran), ``command``."""
    lines = [f"### `{e['out']}`", "", f"**Success {_rate(e['successes'], e['episodes'], e['ci95'])}**", ""]
    sets = e.get("sets") or ()
    if len(sets) == 1:
        lines.append(f"- positions: {sets[0]['set']} ({sets[0]['positions']})")
    else:
        lines += [f"- {s['set']} ({s['positions']} positions): {_rate(s['successes'], s['episodes'], s['ci95'])}"
                  for s in sets]
    lines += [f"- scene variation: {e.get('variation', 'none')}; checkpoint step {e.get('checkpoint_step')}; "
              f"weights: {e.get('weights', 'model.safetensors')}", "", "```bash", str(e.get("command")), "```",
              _RECORD + json.dumps(dict(e), separators=(",", ":")).replace(">", "\\u003e") + _END]
    return "\n".join(lines)


def card_evaluations(text: str) -> list[dict[str, Any]]:
    """The evaluations recorded on a card (``evaluation_section``'s JSON comments), in order; [] for none."""
    found = []
    for line in text.splitlines():
        if line.startswith(_RECORD) and line.endswith(_END):
            try:
                found.append(json.loads(line[len(_RECORD):-len(_END)]))
            except ValueError:
                continue  # a hand-edited record: its section is dropped on the next update, the rest are kept
    return found


def card_metadata(text: str) -> dict[str, Any]:
    """The YAML front matter of a card ({} when it has none or it does not parse)."""
    if not text.startswith("---\n") or (end := text.find("\n---", 4)) < 0:
        return {}
    try:
        meta = yaml.safe_load(text[4:end])
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def is_model_card(text: str) -> bool:
    """Whether ``text`` is a card this module wrote (and so may be re-rendered), not a user's own README."""
    return card_metadata(text).get("library_name") == LIBRARY


def with_evaluation(text: str, parts: Mapping[str, Any], evaluation: Mapping[str, Any]) -> str:
    """The card ``text`` re-rendered from ``parts`` with ``evaluation`` added, or in place of the earlier one of the
    same output folder; every other recorded evaluation and the license are kept."""
    kept = [e for e in card_evaluations(text) if e.get("out") != evaluation["out"]]
    index = next((i for i, e in enumerate(card_evaluations(text)) if e.get("out") == evaluation["out"]), len(kept))
    kept.insert(index, dict(evaluation))
    return model_card(parts, kept, card_metadata(text).get("license"))
