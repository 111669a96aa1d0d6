"""A feature cache built in shares: the plan, one rank's failure, the merge's refusal, resume, bit-equality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_demos

from s2robot.common import distributed
from s2robot.common.distributed import DistInfo
from s2robot.data import sharded_cache
from s2robot.data.episode_groups import episode_groups
from s2robot.data.features import build_feature_cache
from s2robot.data.sharded_cache import part_path, parts_dir, plan_shares
from s2robot.data.store import EpisodeStore
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder

LENGTHS = (5, 7, 4, 6, 3, 5)  # batch 5: groups [0] [1] [2 3] [4 5]; 2 ranks: episodes 0–1 and 2–5


class Counting(FrozenS2Encoder):
    """The micro S² encoder, counting the frames it encodes; it stops (an error) after ``fail_after`` calls."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__(EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32, 64], dtype="float32"))
        self.frames, self.calls, self.fail_after = 0, 0, fail_after
        self.batches: list[int] = []  # frames of every call

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated GPU failure")
        self.calls += 1
        self.frames += len(frames)
        self.batches.append(len(frames))
        return super().forward(frames)


def as_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run one rank of 2 in this process: every collective is done by the rank alone (rank 0's work included)."""
    monkeypatch.setattr(sharded_cache, "on_main", lambda info, fn: fn())
    monkeypatch.setattr(sharded_cache, "raise_if_any_failed",
                        lambda info, error: distributed.raise_if_any_failed(DistInfo(), error))


def build_as(rank: int, demos: Path, out: Path, encoder: FrozenS2Encoder) -> Path:
    return build_feature_cache(demos, encoder, out, batch_size=5, progress=False, dist=DistInfo(rank, 2, rank))


def assert_same_cache(a: EpisodeStore, b: EpisodeStore) -> None:
    """Bit-equal arrays, the same episode infos, fingerprint and attrs."""
    assert a.keys == b.keys and np.array_equal(a.episode_ends, b.episode_ends)
    for k in a.keys:
        assert np.array_equal(a.get_steps(k, 0, a.n_steps), b.get_steps(k, 0, b.n_steps)), k
    assert [a.episode_info(i) for i in range(a.n_episodes)] == [b.episode_info(i) for i in range(b.n_episodes)]
    assert a.fingerprint == b.fingerprint and a.attrs == b.attrs


def test_shares_are_runs_of_the_single_process_groups() -> None:
    """Every episode in exactly one share, in order; every cut at a group boundary; the steps balanced."""
    ends = np.cumsum([5, 7, 4, 6, 3, 5, 9, 2, 8, 4, 6, 1])
    groups = episode_groups(ends, 0, 5)
    cuts = {g.start for g in groups} | {len(ends)}
    for world in (1, 2, 3, 4):
        shares = plan_shares(ends, 5, world)
        assert len(shares) == world and [i for s in shares for i in s] == list(range(len(ends)))
        assert all(s.start in cuts and s.stop in cuts for s in shares)
        steps = [int(ends[s.stop - 1] - (ends[s.start - 1] if s.start else 0)) for s in shares if len(s)]
        assert max(steps) - min(steps) <= 2 * max(int(ends[g.stop - 1] - (ends[g.start - 1] if g.start else 0))
                                                  for g in groups)
    assert plan_shares(np.cumsum(LENGTHS), 5, 2) == [range(0, 2), range(2, 6)]
    assert plan_shares(np.array([3, 6]), 5, 4) == [range(0, 0), range(0, 0), range(0, 2), range(2, 2)]  # one group


def test_every_frame_is_encoded_in_the_batch_it_has_in_one_process(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The ranks' batches, in rank order, are the one-process build's: no batch spans two shares (on a GPU a batch's
    shape can change its floats, so equal batches are what makes the features equal there too)."""
    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    one = Counting()
    build_feature_cache(demos, one, tmp_path / "single.zarr", batch_size=5, progress=False)
    as_rank(monkeypatch)
    ranks = [Counting(), Counting()]
    with pytest.raises(RuntimeError, match="rank 1 of 2 did not finish"):
        build_as(0, demos, tmp_path / "sharded.zarr", ranks[0])
    build_as(1, demos, tmp_path / "sharded.zarr", ranks[1])
    assert one.batches == [5, 5, 2, 5, 5, 5, 3] and ranks[0].batches + ranks[1].batches == one.batches


def test_a_failed_rank_is_named_and_a_rerun_encodes_only_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    single = EpisodeStore.open(build_feature_cache(demos, Counting(), tmp_path / "single.zarr", batch_size=5,
                                                   progress=False))
    as_rank(monkeypatch)
    out = tmp_path / "sharded.zarr"
    with pytest.raises(RuntimeError, match=r"rank 1 of 2 failed on its share of .*, episodes 2–5: RuntimeError: "
                                           r"simulated GPU failure\. Re-run the same command: finished shares"):
        build_as(1, demos, out, Counting(fail_after=2))  # its first group (2 batches) committed, not its second
    assert EpisodeStore.open(part_path(out, 1, 2)).n_episodes == 2
    first = Counting()
    with pytest.raises(RuntimeError, match=r"rank 1 of 2 did not finish its share, episodes 2–5 \(4\); its part .*"
                                           r"rank-1-of-2\.zarr holds 2 of them, from episode 2 on\. Nothing was "
                                           r"merged\. Re-run the same command: finished shares are kept"):
        build_as(0, demos, out, first)  # rank 0 encodes its share, then finds rank 1's unfinished
    assert first.frames == 5 + 7 and EpisodeStore.open(out).n_episodes == 0
    resumed = Counting()
    build_as(1, demos, out, resumed)  # only episodes 4–5 are encoded; then the merge (here by this rank)
    assert resumed.frames == 3 + 5 and not parts_dir(out).exists()
    assert_same_cache(EpisodeStore.open(out), single)
    again = Counting()
    assert build_as(0, demos, out, again) == out and again.frames == 0


def test_a_merge_that_stopped_goes_on_from_the_cache_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts outlive a merge stopped half-way through a part: a re-run encodes nothing and appends the rest."""
    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    single = EpisodeStore.open(build_feature_cache(demos, Counting(), tmp_path / "single.zarr", batch_size=5,
                                                   progress=False))
    as_rank(monkeypatch)
    out = tmp_path / "sharded.zarr"
    with pytest.raises(RuntimeError, match=r"rank 1 of 2 did not finish its share.*rank-1-of-2\.zarr is missing"):
        build_as(0, demos, out, Counting())
    real_merge = sharded_cache.merge_parts
    monkeypatch.setattr(sharded_cache, "merge_parts", lambda *args: None)
    build_as(1, demos, out, Counting())  # both parts complete, nothing merged yet
    monkeypatch.setattr(sharded_cache, "merge_parts", real_merge)
    cache = EpisodeStore.open(out, mode="a")
    for r, n in ((0, 2), (1, 2)):  # the merge "killed" after rank 0's part and 2 episodes of rank 1's
        part = EpisodeStore.open(part_path(out, r, 2))
        cache.add_episodes([(part.get_episode(i), part.episode_info(i)) for i in range(n)])
    resumed = Counting()
    build_as(1, demos, out, resumed)
    assert resumed.frames == 0 and not parts_dir(out).exists()
    assert_same_cache(EpisodeStore.open(out), single)


def test_a_cache_begun_by_one_process_is_finished_in_shares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-process build stopped after episode 3: the ranks encode only episodes 4–5, rank 1's part starts there."""
    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    single = EpisodeStore.open(build_feature_cache(demos, Counting(), tmp_path / "single.zarr", batch_size=5,
                                                   progress=False))
    out = tmp_path / "sharded.zarr"
    with pytest.raises(RuntimeError, match="simulated GPU failure"):  # groups [0] [1] [2 3] committed, [4 5] not
        build_feature_cache(demos, Counting(fail_after=5), out, batch_size=5, progress=False)
    assert EpisodeStore.open(out).n_episodes == 4
    as_rank(monkeypatch)
    idle = Counting()
    with pytest.raises(RuntimeError, match=r"rank 1 of 2 did not finish its share, episodes 2–5.* is missing"):
        build_as(0, demos, out, idle)
    busy = Counting()
    build_as(1, demos, out, busy)
    assert idle.frames == 0 and busy.frames == 3 + 5
    assert_same_cache(EpisodeStore.open(out), single)


def test_a_part_of_another_build_is_encoded_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part written with another batch size (other groups, other batches) is not reused: it is encoded again."""
    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    as_rank(monkeypatch)
    out = tmp_path / "sharded.zarr"
    with pytest.raises(RuntimeError, match="rank 1 of 2 did not finish its share"):
        build_as(0, demos, out, Counting())
    enc = Counting()
    with pytest.warns(UserWarning, match=r"rank-0-of-2\.zarr is of another build: encoding its episodes again"), \
            pytest.raises(RuntimeError, match="rank 1 of 2 did not finish its share"):
        build_feature_cache(demos, enc, out, batch_size=4, progress=False, dist=DistInfo(0, 2, 0))
    share = plan_shares(np.cumsum(LENGTHS), 4, 2)[0]
    assert enc.frames == sum(LENGTHS[i] for i in share) > 0


def test_shifted_views_are_built_in_shares_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """views.n ≥ 1 goes through the same shares: each episode's own offsets, the single-process store bit for bit."""
    from s2robot.data.views import ViewsConfig

    demos = make_demos(tmp_path / "d.zarr", lengths=LENGTHS)
    views = ViewsConfig(n=2, shift=3)
    single = EpisodeStore.open(build_feature_cache(demos, Counting(), tmp_path / "single.zarr", batch_size=5,
                                                   progress=False, views=views))
    as_rank(monkeypatch)
    out = tmp_path / "sharded.zarr"
    with pytest.raises(RuntimeError, match="rank 1 of 2 did not finish"):  # rank 0 alone first
        build_feature_cache(demos, Counting(), out, 5, False, views, DistInfo(0, 2, 0))
    build_feature_cache(demos, Counting(), out, 5, False, views, DistInfo(1, 2, 1))
    assert_same_cache(EpisodeStore.open(out), single)
