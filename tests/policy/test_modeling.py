"""Chunk transformer: overfitting, pad masking, rollout history vs training windows, execution modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2robot.data.dataset import WindowDataset
from s2robot.data.normalize import Normalizer
from s2robot.policy.configuration import PolicyConfig
from s2robot.policy.modeling import ChunkTransformerPolicy

DIMS = {"feat_front": 12, "feat_wrist": 6}


def tiny(**overrides: object) -> PolicyConfig:
    return PolicyConfig(**{"d_model": 32, "n_layers": 2, "n_heads": 2, "ff_mult": 2, "dropout": 0.0,
                           "t_obs": 4, "t_act": 3, "execute_steps": 2, **overrides})


def episode_data(lengths: tuple[int, ...] = (9, 6), seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    data = {k: rng.normal(size=(n, f)).astype(np.float32) for k, f in DIMS.items()}
    data |= {"proprio": rng.normal(size=(n, 8)).astype(np.float32),
             "action": rng.normal(0.0, 0.05, size=(n, 8)).astype(np.float32)}
    return data, np.cumsum(lengths)


def make_policy(cfg: PolicyConfig, data: dict[str, np.ndarray]) -> ChunkTransformerPolicy:
    norm = Normalizer.fit({k: data[k] for k in ("proprio", "action", *DIMS)})
    return ChunkTransformerPolicy(cfg, DIMS, normalizer=norm)


def test_output_shape_and_predict_chunk_is_unnormalized_forward() -> None:
    data, ends = episode_data()
    cfg = tiny()
    policy = make_policy(cfg, data).eval()
    batch = WindowDataset(data, ends, t_obs=cfg.t_obs, t_act=cfg.t_act).get_batch([0, 5, 12])
    out = policy(batch)
    assert out.shape == (3, cfg.t_act, 8)
    torch.testing.assert_close(policy.predict_chunk(batch), policy.normalizer.unnormalize("action", out))


def test_a_batch_overfits() -> None:
    data, ends = episode_data()
    cfg = tiny()
    policy = make_policy(cfg, data)
    batch = WindowDataset(data, ends, t_obs=cfg.t_obs, t_act=cfg.t_act).get_batch(np.arange(8))
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    first = policy.compute_loss(batch).item()
    for _ in range(300):
        loss = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first, (first, loss.item())


def test_padded_steps_do_not_contribute() -> None:
    data, ends = episode_data()
    cfg = tiny()
    policy = make_policy(cfg, data).eval()
    ds = WindowDataset(data, ends, t_obs=cfg.t_obs, t_act=cfg.t_act)
    # sample 0: first step of episode 0 (3 padded obs steps); sample 7: 2 steps before its end (1 padded action)
    batch = ds.get_batch([0, 7])
    assert batch["obs_is_pad"][0].sum() == 3 and batch["action_is_pad"][1].sum() == 1
    changed = {k: v.clone() for k, v in batch.items()}
    changed["action"][batch["action_is_pad"]] = 1e3  # padded targets
    for k in (*DIMS, "proprio"):
        changed[k][batch["obs_is_pad"]] = -1e3  # padded observations
    changed["prev_action"][batch["prev_action_is_pad"]] = 7.0
    torch.testing.assert_close(policy(changed), policy(batch), rtol=1e-5, atol=1e-5)
    assert policy.compute_loss(changed).item() == pytest.approx(policy.compute_loss(batch).item(), rel=1e-5)
    # ... and a non-padded observation does change the output (the mask is not hiding everything)
    changed[next(iter(DIMS))][0, -1] += 1.0
    assert not torch.allclose(policy(changed)[0], policy(batch)[0])


def test_act_history_matches_training_windows() -> None:
    """act() builds exactly the windows WindowDataset builds from the same episode and executed actions."""
    data, ends = episode_data(lengths=(9,))
    cfg = tiny(execute_steps=1)
    policy = make_policy(cfg, data).eval()
    seen: list[dict[str, torch.Tensor]] = []
    real = policy.predict_chunk

    def spy(window: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append({k: v.clone() for k, v in window.items()})
        return real(window)

    policy.predict_chunk = spy
    policy.reset()
    executed = []
    for t in range(9):
        executed.append(policy.act({**{k: data[k][t] for k in DIMS}, "proprio": data["proprio"][t]})[0].numpy())
    replay = {**data, "action": np.stack(executed)}  # what the policy did is what the dataset would hold
    expected = WindowDataset(replay, ends, t_obs=cfg.t_obs, t_act=cfg.t_act).get_batch(np.arange(9))
    for key in (*DIMS, "proprio", "prev_action", "obs_is_pad", "prev_action_is_pad"):
        got = torch.cat([w[key] for w in seen])
        torch.testing.assert_close(got, expected[key], msg=key)


def _stub_chunks(policy: ChunkTransformerPolicy) -> list[torch.Tensor]:
    """Make predict_chunk return chunk[b, i, :] = 100·call + i (+ b/10), recording each."""
    made: list[torch.Tensor] = []

    def fake(window: dict[str, torch.Tensor]) -> torch.Tensor:
        b = window["proprio"].shape[0]
        i = torch.arange(policy.cfg.t_act, dtype=torch.float32)
        chunk = (100.0 * len(made) + i)[None, :, None] + torch.arange(b)[:, None, None] / 10
        made.append(chunk.expand(b, policy.cfg.t_act, 8).clone())
        return made[-1]

    policy.predict_chunk = fake
    return made


def test_receding_horizon_replans_every_k_steps() -> None:
    data, _ = episode_data()
    policy = make_policy(tiny(t_act=4, execute_steps=3), data)
    made = _stub_chunks(policy)
    policy.reset(batch_size=2)
    obs = {"feat_front": np.zeros((2, 12)), "feat_wrist": np.zeros((2, 6)), "proprio": np.zeros((2, 8))}
    got = [policy.act(obs)[:, 0].tolist() for _ in range(7)]
    assert len(made) == 3  # planned at steps 0, 3, 6
    assert [g[0] for g in got] == [0, 1, 2, 100, 101, 102, 200]
    assert [g[1] for g in got] == pytest.approx([0.1, 1.1, 2.1, 100.1, 101.1, 102.1, 200.1])


def test_temporal_ensembling_weights_oldest_first() -> None:
    data, _ = episode_data()
    m = 0.5
    policy = make_policy(tiny(t_act=3, execution="ensemble", ensemble_decay=m), data)
    made = _stub_chunks(policy)
    policy.reset()
    obs = {"feat_front": np.zeros(12), "feat_wrist": np.zeros(6), "proprio": np.zeros(8)}
    got = [policy.act(obs)[0, 0].item() for _ in range(5)]
    assert len(made) == 5  # re-plans every step
    for t in range(5):
        starts = [s for s in range(t + 1) if t - s < 3]  # chunks covering step t, oldest first
        preds = np.array([100.0 * s + (t - s) for s in starts])
        w = np.exp(-m * np.arange(len(starts)))
        assert got[t] == pytest.approx((w * preds).sum() / w.sum())


def test_batched_act_equals_separate_rollouts() -> None:
    data, _ = episode_data()
    policy = make_policy(tiny(execution="ensemble"), data).eval()
    rng = np.random.default_rng(1)
    steps = [{"feat_front": rng.normal(size=(2, 12)), "feat_wrist": rng.normal(size=(2, 6)),
              "proprio": rng.normal(size=(2, 8))} for _ in range(6)]
    policy.reset(batch_size=2)
    together = torch.stack([policy.act(o) for o in steps])  # (T, 2, A)
    for b in range(2):
        policy.reset()
        alone = torch.stack([policy.act({k: v[b] for k, v in o.items()})[0] for o in steps])
        torch.testing.assert_close(alone, together[:, b], rtol=1e-4, atol=1e-5)


def test_bad_input_is_refused_clearly() -> None:
    data, ends = episode_data()
    policy = make_policy(tiny(), data)
    policy.reset()
    with pytest.raises(KeyError, match="feat_wrist"):
        policy.act({"feat_front": np.zeros(12), "proprio": np.zeros(8)})
    with pytest.raises(ValueError, match="feat_front"):
        policy.act({"feat_front": np.zeros(11), "feat_wrist": np.zeros(6), "proprio": np.zeros(8)})
    with pytest.raises(ValueError, match="NaN"):
        policy.act({"feat_front": np.full(12, np.nan), "feat_wrist": np.zeros(6), "proprio": np.zeros(8)})
    batch = WindowDataset(data, ends, t_obs=4, t_act=3).get_batch([0])
    batch["feat_front"] = batch["feat_front"][..., :10]
    with pytest.raises(ValueError, match="feature dim mismatch"):
        policy(batch)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        PolicyConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="execute_steps"):
        PolicyConfig(t_act=4, execute_steps=5)


def test_previous_action_is_the_executed_one_and_targets_the_labels() -> None:
    """With noise injection a store holds label and executed actions: windows learn the labels and are fed the
    executed ones as previous actions, as a rollout feeds the policy what it executed."""
    data, ends = episode_data()
    data["action_executed"] = data["action"] + 0.5
    ds = WindowDataset(data, ends, t_obs=3, t_act=2)
    b = ds.get_batch([4])
    np.testing.assert_array_equal(b["action"][0].numpy(), data["action"][4:6])
    np.testing.assert_array_equal(b["prev_action"][0].numpy(), data["action_executed"][1:4])


def test_without_previous_action_tokens_the_output_ignores_them() -> None:
    data, ends = episode_data()
    policy = make_policy(tiny(prev_action_tokens=False), data).eval()
    assert policy.action_proj is None and policy.n_obs_tokens == len(DIMS) + 1
    batch = WindowDataset(data, ends, t_obs=4, t_act=3).get_batch([3, 8])
    changed = {**batch, "prev_action": batch["prev_action"] + 5.0}
    torch.testing.assert_close(policy(changed), policy(batch))
    with_tokens = make_policy(tiny(), data).eval()
    assert not torch.allclose(with_tokens(changed), with_tokens(batch))


def test_feature_noise_only_while_training() -> None:
    data, ends = episode_data()
    policy = make_policy(tiny(feature_noise=0.5), data)
    batch = WindowDataset(data, ends, t_obs=4, t_act=3).get_batch([3, 8])
    policy.train()
    assert not torch.allclose(policy(batch), policy(batch))
    policy.eval()
    torch.testing.assert_close(policy(batch), policy(batch))
