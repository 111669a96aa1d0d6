"""Model cards: Hugging Face front matter, the encoder, demos and recipe, and evaluations recorded on the card."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from hydra.core.override_parser.overrides_parser import OverridesParser
from safetensors.torch import load_file
from test_checkpoint import CFG, SHAPE, make_policy

from s2robot.policy.checkpoint import WEIGHTS, read_parts, record_evaluation, save_pretrained
from s2robot.policy.model_card import card_evaluations, card_metadata, is_model_card, model_card, with_evaluation
from s2robot.workflows.checkpoint import command_line, main, record_on_card
from s2robot.workflows.evaluate import EvalConfig
from s2robot.workflows.report import wilson_interval

DESCRIBE = {"variant": "vitb-mae-egosoup", "weights": "mvp (3f2a9c1d0b7e)", "weights_random": False,
            "weights_digest": "3f2a9c1d0b7e5a6f", "img_sizes": [224, 448], "readout": "cls", "feature_dim": 1536}


def parts() -> dict[str, dict]:
    run = {"name": "cube_pick", "steps": 20000, "seed": 7, "batch_size": 64, "lr": 3e-4, "demos": "demos/cp.zarr"}
    return {"config": {"format": "s2robot.policy", "format_version": 3, "policy": CFG.__dict__, "shape": SHAPE,
                       "step": 20000, "ema": True, "run": run, "encoder_fingerprint": "fp-enc",
                       "demos": {"path": "/data/demos/cp.zarr", "fingerprint": "fp-demos", "episodes": 120,
                                 "steps": 14400}},
            "encoder": {"config": {"variant": "vitb-mae-egosoup"}, "fingerprint": "fp-enc", "describe": DESCRIBE},
            "env": {"id": "CubePick-v0"}}


def evaluation(out: str, k: int, n: int = 16) -> dict:
    return {"out": out, "successes": k, "episodes": n, "ci95": list(wilson_interval(k, n)),
            "sets": [{"set": "paper", "positions": 16, "successes": k, "episodes": n,
                      "ci95": list(wilson_interval(k, n))}],
            "variation": "none", "checkpoint_step": 20000, "weights": "model.safetensors (EMA)",
            "weights_sha256": "x", "command": f"python scripts/eval.py checkpoint=runs/cp/last out={out}"}


def test_card_front_matter_is_what_huggingface_hub_reads() -> None:
    card = ModelCard(model_card(parts()))
    meta = card.data.to_dict()
    assert meta["library_name"] == "s2robot" and "license" not in meta
    assert {"robotics", "behavior-cloning", "s2", "vitb-mae-egosoup", "CubePick-v0"} <= set(meta["tags"])
    assert ModelCard(model_card(parts(), license="mit")).data.license == "mit"


def test_card_names_the_encoder_demos_and_recipe() -> None:
    text = model_card(parts())
    for fact in ("| variant | `vitb-mae-egosoup` |", "| weights | mvp (3f2a9c1d0b7e) |",
                 "| weights digest (sha256) | 3f2a9c1d0b7e5a6f |", "| S² scales | 224² + 448² |", "| readout | cls |",
                 "| feature dim | 1536 |", "| encoder fingerprint | fp-enc |",
                 "| path | /data/demos/cp.zarr |", "| fingerprint | fp-demos |", "| episodes | 120 |",
                 "| steps | 14400 |", "| `steps` | 20000 |", "| `seed` | 7 |", '"d_model": 32',
                 "Not evaluated yet"):
        assert fact in text, fact


def test_a_card_of_sparse_parts_still_renders() -> None:
    """Parts of a converted format-1 run: no describe, no demos record."""
    text = model_card({"config": {"policy": {}, "shape": SHAPE, "step": 3, "run": {"demos": "d.zarr"},
                                  "cache": {"source": "fp-src"}},
                       "encoder": {"config": {"variant": "vit-micro", "img_sizes": [32]}}, "env": {}})
    assert "| S² scales | 32² |" in text and "| path | d.zarr |" in text and "| fingerprint | fp-src |" in text
    assert "| feature dim | 12 (feat_front) |" in text and "| episodes | unknown |" in text
    assert ModelCard(text).data.library_name == "s2robot"
    oracle = {"variant": "oracle", "privileged": True, "img_sizes": [], "readout": "cube position + gripper"}
    assert "| S² scales | none: privileged state, not vision |" in model_card(
        {**parts(), "encoder": {"config": {"variant": "oracle"}, "describe": oracle}})


def test_evaluations_are_added_replaced_by_output_folder_and_kept() -> None:
    text = model_card(parts(), license="apache-2.0")
    text = with_evaluation(text, parts(), evaluation("runs/cp/eval", 10))
    text = with_evaluation(text, parts(), evaluation("runs/cp/eval-light_high --> x", 4))
    text = with_evaluation(text, parts(), evaluation("runs/cp/eval", 11))  # the same folder again: replaces
    found = card_evaluations(text)
    assert [(e["out"], e["successes"]) for e in found] == [("runs/cp/eval", 11), ("runs/cp/eval-light_high --> x", 4)]
    lo, hi = wilson_interval(11, 16)
    assert f"**Success 68.8% (11/16 episodes, Wilson 95% CI {100 * lo:.1f}–{100 * hi:.1f}%)**" in text
    assert "- positions: paper (16)" in text and "Not evaluated yet" not in text
    two = with_evaluation(text, parts(), {**evaluation("runs/cp/eval-held", 5), "sets": [
        {"set": "paper", "positions": 16, "successes": 3, "episodes": 8, "ci95": list(wilson_interval(3, 8))},
        {"set": "held-out", "positions": 8, "successes": 2, "episodes": 8, "ci95": list(wilson_interval(2, 8))}]})
    assert "- held-out (8 positions): 25.0% (2/8 episodes, Wilson 95% CI" in two
    assert "python scripts/eval.py checkpoint=runs/cp/last out=runs/cp/eval" in text
    assert ModelCard(text).data.license == "apache-2.0"


def test_evaluate_records_its_numbers_on_the_card_of_the_checkpoint(tmp_path: Path) -> None:
    """``record_on_card`` with a results dict shaped as ``evaluate`` writes it, atomically, one section per output
    folder; a newer save starts a fresh card; other weights or a user's README are left alone."""
    policy = make_policy()
    p = parts()
    ckpt = save_pretrained(tmp_path / "last", policy.state_dict(), policy.normalizer,
                           {"config": {k: v for k, v in p["config"].items() if "format" not in k},
                            "encoder": p["encoder"], "env": p["env"]})
    loaded = read_parts(ckpt)
    assert "Not evaluated yet" in (ckpt / "README.md").read_text()

    def report(out: Path, k: int, n: int) -> dict:
        return {"successes": k, "episodes": n, "success_rate": k / n, "ci95": list(wilson_interval(k, n)),
                "sets": [{"set": "paper", "positions": 16, "successes": k, "episodes": n}], "variation": "none",
                "checkpoint_step": 20000, "eval": {"use_ema": True}, "outputs": {"dir": str(out), "videos": []}}

    note = record_on_card(ckpt, loaded, report(tmp_path / "eval", 30, 48), "python scripts/eval.py checkpoint=x")
    assert note.startswith("model card") and str(tmp_path / "eval") in note
    record_on_card(ckpt, loaded, report(tmp_path / "eval-visual_high", 12, 48), "python scripts/eval.py y")
    card = ModelCard.load(ckpt / "README.md")
    assert card.data.library_name == "s2robot"
    lo, hi = wilson_interval(30, 48)
    assert f"62.5% (30/48 episodes, Wilson 95% CI {100 * lo:.1f}–{100 * hi:.1f}%)" in card.text
    assert [e["out"] for e in card_evaluations(card.content)] == [str(tmp_path / "eval"),
                                                                  str(tmp_path / "eval-visual_high")]
    assert "weights: model.safetensors (EMA)" in card.text and "| `seed` | 7 |" in card.text
    assert sorted(p.name for p in ckpt.iterdir() if p.name.startswith(".")) == []  # no temporary file left

    stale = {**loaded, "config": {**loaded["config"], "weights_file": {"sha256": "other"}}}
    before = (ckpt / "README.md").read_text()
    assert "other weights" in record_on_card(ckpt, stale, report(tmp_path / "eval2", 1, 16), "c")
    save_pretrained(ckpt, policy.state_dict(), policy.normalizer, {"config": loaded["config"],
                                                                   "encoder": p["encoder"], "env": p["env"]})
    assert (ckpt / "README.md").read_text() != before and "Not evaluated yet" in (ckpt / "README.md").read_text()
    (ckpt / "README.md").write_text("# my own notes\n")
    assert "not an s2robot model card" in record_on_card(ckpt, read_parts(ckpt), report(tmp_path / "e", 1, 2), "c")
    assert (ckpt / "README.md").read_text() == "# my own notes\n"


def test_card_command_rerenders_with_a_license_keeping_evaluations(tmp_path: Path) -> None:
    policy = make_policy()
    p = parts()
    ckpt = save_pretrained(tmp_path / "last", policy.state_dict(), policy.normalizer,
                           {"config": {k: v for k, v in p["config"].items() if "format" not in k},
                            "encoder": p["encoder"], "env": p["env"]})
    sha = read_parts(ckpt)["config"]["weights_file"]["sha256"]
    record_evaluation(ckpt, {**evaluation(str(tmp_path / "eval"), 9), "weights_sha256": sha})
    assert main(["card", str(ckpt), "--license", "mit"]) == 0
    text = (ckpt / "README.md").read_text()
    assert ModelCard(text).data.license == "mit" and len(card_evaluations(text)) == 1
    save_pretrained(ckpt, policy.state_dict(), policy.normalizer, read_parts(ckpt))  # the license survives a save
    assert ModelCard.load(ckpt / "README.md").data.license == "mit"
    assert torch.equal(policy.state_dict()["queries"], load_file(ckpt / WEIGHTS)["queries"])


def test_the_recorded_command_reproduces_the_evaluation_config() -> None:
    cfg = EvalConfig(checkpoint='runs/my "run"/last', repeats=1, positions=[[0.5, 0.0], [0.6, -0.1]],
                     variation="light_intensity:high", joint_noise=None, out="runs/x/eval")
    cfg.placement.dtype = "float32"
    command = command_line("scripts/eval.py", cfg)
    assert command.startswith("python scripts/eval.py ")
    overrides = shlex.split(command)[2:]
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)}
    assert parsed == {"checkpoint": 'runs/my "run"/last', "positions": [[0.5, 0.0], [0.6, -0.1]], "repeats": 1,
                      "joint_noise": None, "variation": "light_intensity:high", "placement.dtype": "float32",
                      "out": "runs/x/eval"}
    assert command_line("scripts/eval.py", EvalConfig()) == "python scripts/eval.py"


@pytest.mark.parametrize("text", ["", "# my notes\n", "---\n: [\n---\n", "---\nlibrary_name: other\n---\n"])
def test_a_readme_that_is_not_our_card_is_recognised(text: str) -> None:
    assert not is_model_card(text) and card_evaluations(text) == [] and card_metadata(text).get("license") is None
