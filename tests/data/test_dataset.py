"""Tests for s2robot.data.dataset: window indices, padding masks, split, WindowDataset."""

import numpy as np
import pytest
import torch

from s2robot.data.dataset import WindowDataset, split_episodes, window_indices
from s2robot.data.store import EpisodeStore

LENGTHS = (1, 3, 20)
ENDS = np.cumsum(LENGTHS)  # [1, 4, 24]


def _data(ends: np.ndarray, n_feat: int = 5) -> dict[str, np.ndarray]:
    """Per-step arrays whose values encode the global step: value[t] = t (+ column offsets)."""
    t = np.arange(ends[-1], dtype=np.float32)[:, None]
    return {
        "feat_front": (t + np.arange(n_feat) / 10).astype(np.float16),
        "feat_wrist": (t + 0.5).astype(np.float16),
        "proprio": (t + 100 + np.arange(8)).astype(np.float32),
        "action": (t + 1000 + np.arange(8)).astype(np.float32),
    }


def test_window_indices_hand_computed_to4_ta4():
    """Every step of episodes of length 1, 3, 20 with To=Ta=4 against hand-written windows."""
    ix = window_indices(ENDS, 4, 4)
    assert len(ix) == 24
    np.testing.assert_array_equal(ix.step, np.arange(24))
    # episode 0: one step [0, 1)
    np.testing.assert_array_equal(ix.obs[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(ix.obs_is_pad[0], [1, 1, 1, 0])
    np.testing.assert_array_equal(ix.prev_action_is_pad[0], [1, 1, 1, 1])
    np.testing.assert_array_equal(ix.action[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(ix.action_is_pad[0], [0, 1, 1, 1])
    # episode 1: steps [1, 4); sample t=2 (second step)
    np.testing.assert_array_equal(ix.obs[2], [1, 1, 1, 2])
    np.testing.assert_array_equal(ix.obs_is_pad[2], [1, 1, 0, 0])
    np.testing.assert_array_equal(ix.prev_action_is_pad[2], [1, 1, 1, 0])
    np.testing.assert_array_equal(ix.prev_action[2], [0, 0, 0, 1])
    np.testing.assert_array_equal(ix.action[2], [2, 3, 3, 3])
    np.testing.assert_array_equal(ix.action_is_pad[2], [0, 0, 1, 1])
    # episode 2: steps [4, 24); sample t=10 is interior: no padding anywhere
    np.testing.assert_array_equal(ix.obs[10], [7, 8, 9, 10])
    np.testing.assert_array_equal(ix.prev_action[10], [6, 7, 8, 9])
    assert not ix.obs_is_pad[10].any() and not ix.prev_action_is_pad[10].any()
    np.testing.assert_array_equal(ix.action[10], [10, 11, 12, 13])
    assert not ix.action_is_pad[10].any()
    # last step of the last episode
    np.testing.assert_array_equal(ix.obs[23], [20, 21, 22, 23])
    np.testing.assert_array_equal(ix.action[23], [23, 23, 23, 23])
    np.testing.assert_array_equal(ix.action_is_pad[23], [0, 1, 1, 1])
    # windows never cross episode boundaries
    starts, ends = np.array([0, 1, 4]), ENDS
    ep = np.searchsorted(ends, ix.step, side="right")
    assert (ix.obs >= starts[ep][:, None]).all() and (ix.action < ends[ep][:, None]).all()


def test_window_indices_to16_ta16_padding_counts():
    """With To=Ta=16 the pad counts follow max(0, To-1-k) and max(0, Ta-(L-k)) at step k of an episode."""
    ix = window_indices(ENDS, 16, 16)
    starts = np.array([0, 1, 4])
    for e, (start, length) in enumerate(zip(starts, LENGTHS, strict=True)):
        for k in range(length):
            t = start + k
            assert ix.obs_is_pad[t].sum() == max(0, 15 - k), (e, k)
            assert ix.action_is_pad[t].sum() == max(0, 16 - (length - k)), (e, k)
            assert ix.prev_action_is_pad[t].sum() == max(0, 15 - k) + (k < 16)
            assert ix.obs[t, -1] == t and ix.action[t, 0] == t
    # pads repeat the first obs / last action of the episode
    assert (ix.obs[4][ix.obs_is_pad[4]] == 4).all()
    assert (ix.action[5][ix.action_is_pad[5]] == 23).all()


def test_window_indices_episode_subset_and_errors():
    """Selecting episodes keeps only their steps; bad inputs raise clear errors."""
    ix = window_indices(ENDS, 2, 2, episodes=[2, 0])
    np.testing.assert_array_equal(ix.step, [*range(4, 24), 0])
    with pytest.raises(ValueError, match="horizons"):
        window_indices(ENDS, 0, 4)
    with pytest.raises(ValueError, match="out of range"):
        window_indices(ENDS, 4, 4, episodes=[3])
    with pytest.raises(ValueError, match="empty"):
        window_indices(ENDS, 4, 4, episodes=[])
    with pytest.raises(ValueError, match="non-empty"):
        window_indices(np.zeros(0, dtype=np.int64), 4, 4)
    with pytest.raises(ValueError, match="increase strictly"):
        window_indices(np.array([3, 3]), 4, 4)


def reference_window(data, ends, t, t_obs, t_act):
    """An independent oracle for one sample: slice the episode around step t and edge-pad it."""
    ep = int(np.searchsorted(ends, t, side="right"))
    start, end = (int(ends[ep - 1]) if ep else 0), int(ends[ep])
    lo, hi = max(start, t - t_obs + 1), min(end, t + t_act)
    n_obs_pad, n_act_pad = t_obs - (t + 1 - lo), t_act - (hi - t)

    def edge_pad(x, before, after):
        return torch.from_numpy(np.pad(x, [(before, after)] + [(0, 0)] * (x.ndim - 1), mode="edge").astype(np.float32))

    actions = data["action"]
    item = {k: edge_pad(data[k][lo : t + 1], n_obs_pad, 0) for k in data if k != "action"}
    prev = np.concatenate([np.zeros_like(actions[:1]), actions[start:t]])[lo - start :]  # action[s-1]
    item["prev_action"] = edge_pad(prev, n_obs_pad, 0)
    item["action"] = edge_pad(actions[t:hi], 0, n_act_pad)
    item["obs_is_pad"] = torch.arange(t_obs) < n_obs_pad
    item["prev_action_is_pad"] = torch.arange(t_obs) < n_obs_pad + (lo == start)
    item["action_is_pad"] = torch.arange(t_act) >= t_act - n_act_pad
    return item


@pytest.mark.parametrize("t_obs,t_act", [(4, 4), (16, 16), (1, 3)])
def test_item_contents_and_batch_equals_items(t_obs, t_act):
    """Items hold the right values (prev action = action[s-1], zeros at the episode start) and get_batch
    (vectorised gathers) equals an independent slice-and-edge-pad oracle, item by item."""
    data = _data(ENDS)
    ds = WindowDataset(data, ENDS, t_obs=t_obs, t_act=t_act)
    assert ds.feature_keys == ("feat_front", "feat_wrist")
    item = ds[6]  # episode 2 (start 4), third step
    assert item["feat_front"].shape == (t_obs, 5) and item["feat_front"].dtype == torch.float32
    assert item["proprio"].shape == item["prev_action"].shape == (t_obs, 8)
    assert item["action"].shape == (t_act, 8) and item["action_is_pad"].dtype == torch.bool
    np.testing.assert_array_equal(item["proprio"][-1].numpy(), data["proprio"][6])
    np.testing.assert_array_equal(item["action"][0].numpy(), data["action"][6])
    np.testing.assert_array_equal(item["prev_action"][-1].numpy(), data["action"][5])
    if t_obs >= 3:
        np.testing.assert_array_equal(item["prev_action"][-3].numpy(), np.zeros(8))  # step 4 = episode start
        np.testing.assert_array_equal(item["proprio"][-3].numpy(), data["proprio"][4])
        assert item["prev_action_is_pad"][-3] and not item["obs_is_pad"][-3]
    batch = ds.get_batch(np.arange(len(ds)))
    assert set(batch) == set(item)
    for i in range(len(ds)):
        expect = reference_window(data, ENDS, i, t_obs, t_act)
        assert set(expect) == set(batch)
        for k, v in expect.items():
            assert v.dtype == batch[k].dtype
            torch.testing.assert_close(batch[k][i], v, rtol=0, atol=0, msg=f"sample {i} key {k}")
            torch.testing.assert_close(ds[i][k], v, rtol=0, atol=0, msg=f"item {i} key {k}")


def test_dataset_errors_and_from_store(tmp_path):
    """Missing keys, wrong lengths and bad ids fail clearly; from_store loads non-rgb keys."""
    data = _data(ENDS)
    with pytest.raises(ValueError, match="'action'"):
        WindowDataset({k: v for k, v in data.items() if k != "action"}, ENDS)
    with pytest.raises(ValueError, match="expected 24 steps"):
        WindowDataset({**data, "proprio": data["proprio"][:-1]}, ENDS)
    with pytest.raises(ValueError, match="out of range"):
        WindowDataset(data, ENDS, episodes=[0, 5])
    with pytest.raises(ValueError, match=">= 1"):
        WindowDataset(data, ENDS, t_obs=0)

    store = EpisodeStore.create(tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="no episodes"):
        WindowDataset.from_store(store)
    starts = np.concatenate([[0], ENDS[:-1]])
    for s, e in zip(starts, ENDS, strict=True):
        ep = {k: v[s:e] for k, v in data.items()}
        store.add_episode({**ep, "rgb_front": np.zeros((e - s, 4, 4, 3), np.uint8)})
    ds = WindowDataset.from_store(store, episodes=[1], t_obs=4, t_act=4)
    assert set(ds.data) == {"feat_front", "feat_wrist", "proprio", "action"} and len(ds) == 3
    np.testing.assert_array_equal(ds[0]["action"][0].numpy(), data["action"][1])


def test_split_episodes():
    """Episode split: disjoint, covers all, deterministic per seed, >= 1 val and >= 1 train."""
    train, val = split_episodes(10, 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(range(10))
    np.testing.assert_array_equal(split_episodes(10, 0.2, seed=0)[1], val)
    assert any(not np.array_equal(split_episodes(10, 0.2, seed=s)[1], val) for s in range(1, 6))
    assert len(split_episodes(5, 0.01, seed=0)[1]) == 1
    train, val = split_episodes(3, 0.0, seed=0)
    np.testing.assert_array_equal(train, [0, 1, 2])
    assert len(val) == 0
    with pytest.raises(ValueError, match="keep one for training"):
        split_episodes(1, 0.5, seed=0)
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(4, 1.0, seed=0)
    with pytest.raises(ValueError, match="at least 1 episode"):
        split_episodes(0, 0.1, seed=0)
