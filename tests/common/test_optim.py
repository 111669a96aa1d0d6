"""Atomic saves (MAE and distillation checkpoints, encoder exports, downloads): nothing beside the target is touched."""

from __future__ import annotations

from pathlib import Path

import torch

from s2robot.common.optim import save_checkpoint


def test_save_checkpoint_touches_no_other_file(tmp_path: Path) -> None:
    (tmp_path / "last.tmp").write_text("a user's file with the name a fixed temp name would take")
    save_checkpoint(tmp_path / "last.pt", {"step": 1})
    save_checkpoint(tmp_path / "last.pt", {"step": 2})
    assert torch.load(tmp_path / "last.pt", weights_only=True) == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.tmp"]
    assert (tmp_path / "last.tmp").read_text().startswith("a user's file")


def test_a_write_that_fails_keeps_the_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    import pytest

    from s2robot.common.atomic import replacing

    target = tmp_path / "w.pth"
    target.write_text("previous")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]
