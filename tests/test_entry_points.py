"""The ``python -m`` tools are also installed commands (``[project.scripts]``): each names a ``main`` that parses
its own arguments and returns an exit status."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_python_m_tool_is_a_command() -> None:
    tools = {p.stem for p in (ROOT / "s2robot" / "workflows").glob("*.py") if "__main__" in p.read_text()
             and "argparse" in p.read_text()}
    assert {f"s2robot-{t}" for t in tools} == set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_command_resolves_and_prints_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module, func = SCRIPTS[name].split(":")
    main = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out
