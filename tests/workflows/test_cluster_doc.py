"""Every command of docs/cluster.md's bash blocks parses as written (the README's check: hydra overrides compose)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_readme_commands import entry_point, readme_commands
from test_readme_commands import test_readme_command_parses as command_parses

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"
COMMANDS = [c for c in readme_commands(DOC) if entry_point(c) is not None]


def test_the_cluster_doc_runs_cache_train_and_eval_under_torchrun() -> None:
    for script in ("scripts/cache_features.py", "scripts/train_bc.py", "scripts/eval.py"):
        assert any(c.startswith("torchrun --standalone") and script in c for c in COMMANDS), script
        assert any(c.startswith("torchrun --nnodes=2") and script in c for c in COMMANDS), script


@pytest.mark.parametrize("command", COMMANDS)
def test_cluster_doc_command_parses(command: str) -> None:
    command_parses(command)
