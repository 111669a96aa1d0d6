"""BC training: checkpoints, exact resume, DDP equivalence, error paths (tiny models, synthetic demos)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_demos, micro_encoder_config

from s2robot.common.optim import lr_factor
from s2robot.common.runlog import read_metrics
from s2robot.data.dataset import batch_indices
from s2robot.policy.checkpoint import from_pretrained, load_training_state, read_parts
from s2robot.policy.configuration import PolicyConfig
from s2robot.policy.modeling import ChunkTransformerPolicy
from s2robot.workflows.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
LENGTHS = (12, 9, 14, 10, 11, 13)


def config(tmp: Path, **overrides: object) -> TrainConfig:
    demos = tmp / "demos.zarr"
    if not demos.exists():
        make_demos(demos, LENGTHS)
    base = dict(name="t", runs_dir=str(tmp / "runs"), encoder=micro_encoder_config(), demos=str(demos),
                policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, ff_mult=2, dropout=0.1),
                steps=12, batch_size=8, warmup_steps=2, val_every=4, save_every=4, log_every=1, device="cpu",
                progress=False)
    return TrainConfig(**{**base, **overrides})


def load_checkpoint(directory: Path) -> dict:
    """A checkpoint folder's config.json merged with its training state (resume part)."""
    return {**read_parts(directory)["config"], **load_training_state(directory)}


def losses(cfg: TrainConfig) -> dict[int, float]:
    return {m["step"]: m["train/loss"] for m in read_metrics(cfg.run_dir) if "train/loss" in m}


def test_trains_and_writes_checkpoints(tmp_path: Path) -> None:
    cfg = config(tmp_path, ema_decay=0.9)
    last = train(cfg)
    ckpt = load_checkpoint(last)
    assert ckpt["step"] == 12 and (cfg.checkpoint_dir / "best").is_dir()
    assert {"model", "ema", "optimizer", "scheduler", "rng", "train_config", "encoder_fingerprint"} <= set(ckpt)
    assert ckpt["weights_random"] is True
    policy, _ = from_pretrained(last)
    assert isinstance(policy, ChunkTransformerPolicy) and not policy.training
    assert sorted(policy.normalizer.keys) == ["action", "feat_front", "proprio"]
    card = (last / "README.md").read_text()  # the model card names the demos it was trained on
    assert f"| episodes | {len(LENGTHS)} |" in card and f"| steps | {sum(LENGTHS)} |" in card
    assert "| `steps` | 12 |" in card and "Not evaluated yet" in card
    logged = losses(cfg)
    assert sorted(logged) == list(range(1, 13)) and all(np.isfinite(list(logged.values())))
    assert any("val/loss" in m for m in read_metrics(cfg.run_dir))


def test_resume_continues_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = config(tmp_path, name="straight")
    train(straight)
    # killed during step 11 (last save at step 8), then the same command again
    real, calls = ChunkTransformerPolicy.compute_loss, []

    def interrupted(self: ChunkTransformerPolicy, batch: dict) -> torch.Tensor:
        calls.append(self.training)
        if sum(calls) == 11:
            raise KeyboardInterrupt("simulated kill")
        return real(self, batch)

    with monkeypatch.context() as m:
        m.setattr(ChunkTransformerPolicy, "compute_loss", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(config(tmp_path, name="cut"))
    assert load_checkpoint(tmp_path / "runs" / "cut" / "checkpoints" / "last")["step"] == 8
    train(config(tmp_path, name="cut"))
    a, b = losses(straight), losses(config(tmp_path, name="cut"))
    assert sorted(b) == list(range(1, 13))  # the lines of steps 9-10 from the first run were replaced
    assert [b[s] for s in range(1, 13)] == [a[s] for s in range(1, 13)]
    sa = load_checkpoint(straight.checkpoint_dir / "last")["model"]
    sb = load_checkpoint(tmp_path / "runs" / "cut" / "checkpoints" / "last")["model"]
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_resume_refuses_another_config_and_overwrite_restarts(tmp_path: Path) -> None:
    train(config(tmp_path, steps=4))
    other = config(tmp_path, steps=8, policy=PolicyConfig(d_model=64, n_layers=1, n_heads=2))
    with pytest.raises(ValueError, match="overwrite=true"):
        train(other)
    with pytest.raises(ValueError, match="encoder"):
        train(config(tmp_path, steps=8, encoder=micro_encoder_config(seed=1)))
    # lr and weight decay live in the optimizer state: a changed value would be recorded, never applied: refused
    for changed in ({"lr": 1e-3}, {"weight_decay": 0.5}, {"warmup_steps": 3}):
        (key, value), = changed.items()
        with pytest.raises(ValueError, match=rf"different {key} \(.* → {value}\)"):
            train(config(tmp_path, steps=8, **changed))
    other.overwrite = True
    assert load_checkpoint(train(other))["step"] == 8


def test_resume_takes_a_changed_execution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """How chunks are executed is never trained on: a run resumes across a change of it, and later checkpoints
    carry the new one (a run trained executing 8 actions of each chunk, resumed executing all 16); a finished run
    says that its checkpoint keeps its own and how to evaluate the other."""
    small = {"d_model": 32, "n_layers": 1, "n_heads": 2, "ff_mult": 2, "dropout": 0.1}
    train(config(tmp_path, steps=4, policy=PolicyConfig(**small, execute_steps=8)))
    last = train(config(tmp_path, steps=8, policy=PolicyConfig(**small, execute_steps=16)))
    assert load_checkpoint(last)["step"] == 8 and read_parts(last)["config"]["policy"]["execute_steps"] == 16
    capsys.readouterr()
    train(config(tmp_path, steps=8, policy=PolicyConfig(**small, execute_steps=4)))
    out = capsys.readouterr().out
    assert "already trained for 8" in out and "pass executing.execute_steps=4" in out
    assert read_parts(last)["config"]["policy"]["execute_steps"] == 16
    with pytest.raises(ValueError, match="different policy"):  # anything that is trained on is still refused
        train(config(tmp_path, steps=12, policy=PolicyConfig(**{**small, "dropout": 0.2})))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    cfg = config(tmp_path, steps=12)
    real, calls = ChunkTransformerPolicy.compute_loss, []

    def poisoned(self: ChunkTransformerPolicy, batch: dict) -> torch.Tensor:
        calls.append(1)
        loss = real(self, batch)
        return loss * float("nan") if len(calls) > 6 and self.training else loss

    monkeypatch.setattr(ChunkTransformerPolicy, "compute_loss", poisoned)
    with pytest.raises(FloatingPointError, match=r"step 6.*last good checkpoint"):
        train(cfg)
    ckpt = load_checkpoint(cfg.checkpoint_dir / "last")
    assert ckpt["step"] == 4 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_bad_data_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="training windows"):
        train(config(tmp_path, batch_size=512))
    with pytest.raises(FileNotFoundError, match="record demos"):
        train(config(tmp_path, demos=str(tmp_path / "nope.zarr")))
    one = tmp_path / "one.zarr"
    make_demos(one, (5,))
    with pytest.raises(ValueError, match="record more episodes"):
        train(config(tmp_path, demos=str(one)))
    # a cache made by one encoder, given to a config with another
    cfg = config(tmp_path, steps=2, name="a")
    cache = load_checkpoint(train(cfg))["cache"]["path"]
    with pytest.raises(ValueError, match="made by encoder"):
        train(config(tmp_path, name="b", cache=cache, encoder=micro_encoder_config(readout="mean")))


def test_schedule_and_sampler_are_pure() -> None:
    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(9, 10, 100) == 1.0
    assert lr_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-12)
    a = batch_indices(50, 8, 13, seed=3)
    np.testing.assert_array_equal(a, batch_indices(50, 8, 13, seed=3))
    shards = np.concatenate([batch_indices(50, 8, 13, 3, rank=r, world=2) for r in range(2)])
    np.testing.assert_array_equal(shards, a)
    epoch = np.concatenate([batch_indices(50, 8, s, 3) for s in range(6)])  # 6 full batches per epoch
    assert len(set(epoch.tolist())) == 48


@pytest.mark.slow
def test_ddp_equals_single_process(tmp_path: Path) -> None:
    """2 gloo processes under torchrun reach the weights of 1 process on the same global batch."""
    single = config(tmp_path, name="single", steps=6, save_every=6, val_every=6,
                    policy=PolicyConfig(d_model=32, n_layers=1, n_heads=2, ff_mult=2, dropout=0.0))
    train(single)
    args = ["name=ddp", f"runs_dir={tmp_path / 'runs'}", f"demos={single.demos}", "encoder=micro_s2_random",
            "encoder.device=cpu", "policy=tiny", "policy.n_layers=1", "policy.ff_mult=2", "steps=6",
            "batch_size=8", "warmup_steps=2", "save_every=6", "val_every=6", "log_every=1", "device=cpu",
            "progress=false", "wandb.mode=disabled"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "scripts" / "train_bc.py"), *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a = load_checkpoint(single.checkpoint_dir / "last")["model"]
    b = load_checkpoint(tmp_path / "runs" / "ddp" / "checkpoints" / "last")["model"]
    assert a.keys() == b.keys()
    for k in a:
        # the attention key bias has a mathematically zero gradient (softmax ignores a shift of all scores);
        # AdamW scales its float-rounding noise up to lr-sized steps, so only it gets a looser tolerance
        atol = 1e-4 if k.endswith("in_proj_bias") else 1e-5
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=atol, msg=k)
    la, lb = losses(single), losses(config(tmp_path, name="ddp"))
    assert sorted(lb) == list(range(1, 7))
    # rank 0 logs the loss of its shard (half the global batch): close to the global mean, not equal
    assert lb[1] != la[1] and lb[1] == pytest.approx(la[1], rel=0.5)


def test_periodic_evaluation_chooses_best_by_success(tmp_path: Path) -> None:
    rates = iter([0.25, 0.75, 0.5])
    seen: list[tuple[int, bool]] = []

    def evaluator(policy: ChunkTransformerPolicy, step: int) -> dict[str, float]:
        seen.append((step, policy.training))
        return {"success_rate": next(rates)}

    cfg = config(tmp_path, eval_every=4)
    train(cfg, evaluator)
    assert [s for s, _ in seen] == [4, 8, 12]
    best = load_checkpoint(cfg.checkpoint_dir / "best")
    assert best["step"] == 8 and best["best"] == {"metric": "eval/success_rate", "value": 0.75, "step": 8}
    logged = [m["eval/success_rate"] for m in read_metrics(cfg.run_dir) if "eval/success_rate" in m]
    assert logged == [0.25, 0.75, 0.5]


def test_shifted_views_train_and_change_what_the_policy_sees(tmp_path: Path) -> None:
    """views.n=1: the views are encoded beside the cache and read by the training windows (prob 1: every one), so
    the losses differ from training on the rendered frames alone; runs from before views resume as views.n=0."""
    from s2robot.data.views import ViewsConfig, views_cache_path
    from s2robot.workflows.train import Trainer

    plain = config(tmp_path, name="plain")
    train(plain)
    shifted = config(tmp_path, name="shifted", views=ViewsConfig(n=1, shift=4, prob=1.0))
    train(shifted)
    cache = next(p for p in (tmp_path / "features").glob("demos-*.zarr") if "-views" not in p.name)
    assert views_cache_path(cache, shifted.views).is_dir()
    a, b = losses(plain), losses(shifted)
    assert a[1] != b[1] and all(np.isfinite(list(b.values())))
    assert load_checkpoint(shifted.checkpoint_dir / "last")["train_config"]["views"]["n"] == 1
    state = load_training_state(plain.checkpoint_dir / "last")
    del state["train_config"]["views"]  # a checkpoint written before views existed
    torch.save(state, plain.checkpoint_dir / "last" / "training_state.pt")
    assert Trainer(config(tmp_path, name="plain", steps=14)).step == 12  # resumes: no views is views.n=0
    other_prob = config(tmp_path, name="plain", steps=14, views=ViewsConfig(n=0, prob=0.9))
    assert Trainer(other_prob).step == 12  # with n=0 the other views settings change nothing
    with pytest.raises(ValueError, match="trained with a different views"):
        Trainer(config(tmp_path, name="plain", steps=14, views=ViewsConfig(n=1, shift=4)))


def test_overwrite_deletes_nothing_before_the_new_inputs_load(tmp_path: Path) -> None:
    cfg = config(tmp_path, steps=4)
    train(cfg)
    with pytest.raises(FileNotFoundError, match="record demos"):
        train(config(tmp_path, steps=4, overwrite=True, demos=str(tmp_path / "typo.zarr")))
    assert load_checkpoint(cfg.checkpoint_dir / "last")["step"] == 4 and (cfg.checkpoint_dir / "best").is_dir()
    assert losses(cfg)
    (cfg.checkpoint_dir / "best" / "notes.md").write_text("mine")  # a user file: best/ holds more than a checkpoint
    with pytest.raises(FileExistsError, match=r"notes\.md"):
        train(config(tmp_path, steps=4, overwrite=True))
    assert (cfg.checkpoint_dir / "best" / "notes.md").read_text() == "mine"


def test_resume_on_other_demos_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, steps=4)
    last = train(cfg)
    trained_on = read_parts(last)["config"]["cache"]
    assert trained_on["source"] and trained_on["fingerprint"]
    other = tmp_path / "other.zarr"
    make_demos(other, LENGTHS, seed=1)  # the same shapes, other episodes
    with pytest.raises(ValueError, match=r"different demo store .*overwrite=true"):
        train(config(tmp_path, steps=8, demos=str(other)))
    assert load_checkpoint(last)["step"] == 4
    assert load_checkpoint(train(config(tmp_path, steps=8)))["step"] == 8  # the same demos still resume


def test_a_cache_with_deleted_chunks_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, steps=2)
    cache = Path(load_checkpoint(train(cfg))["cache"]["path"])
    for key in ("feat_front", "action"):  # deleted chunks read back as zeros
        for chunk in (cache / "data" / key / "c").rglob("*"):
            if chunk.is_file():
                chunk.unlink()
    with pytest.raises(ValueError, match=r"episode 0: its arrays differ from the digest.*Delete it"):
        train(config(tmp_path, steps=2, name="other"))
    assert not (tmp_path / "runs" / "other" / "checkpoints" / "last").exists()


def test_a_checkpoint_renamed_mid_swap_is_resumed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A kill between the two renames of an older s2robot's swap left ``last.old`` and no ``last``."""
    cfg = config(tmp_path, steps=4)
    train(cfg)
    (cfg.checkpoint_dir / "last").rename(cfg.checkpoint_dir / "last.old")
    capsys.readouterr()
    last = train(config(tmp_path, steps=8))
    out = capsys.readouterr().out
    assert "recovered" in out and "resuming" in out and "at step 4/8" in out
    assert load_checkpoint(last)["step"] == 8 and not (cfg.checkpoint_dir / "last.old").exists()
