"""Every command in the README's fenced ``bash`` blocks parses as written: a hydra entry point's overrides compose
into its config (types and value checks included), an argparse script or ``python -m`` tool exists, a ``make``
target is in the Makefile. Nothing is run: commands that need a robot, a GPU or hours are checked the same way."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from s2robot.workflows.configs import register_configs

ROOT = Path(__file__).resolve().parents[1]
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")
LAUNCHERS = {"python", "python3", ".venv/bin/python", "torchrun"}


SHELL_VARIABLE = re.compile(r'^([A-Z_][A-Z0-9_]*)=(?:"([^"]*)"|(\S*))$')


def readme_commands(path: Path = ROOT / "README.md") -> list[str]:
    """The commands of ``path``'s fenced bash blocks: continuation lines joined, comments dropped, shell variables the
    README sets (``H="env=franka ..."``) expanded."""
    commands, block, pending, variables = [], None, "", {}
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            block = None if block is not None else line.strip()[3:].strip()
            continue
        if block not in ("bash", "sh", "shell"):
            continue
        text = pending + line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else pending
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if found := SHELL_VARIABLE.match(text.strip()):
            variables[found.group(1)] = found.group(2) if found.group(2) is not None else found.group(3)
        elif text.strip():
            commands.append(re.sub(r"\$([A-Z_][A-Z0-9_]*)", lambda m: variables.get(m.group(1), m.group(0)),
                                   text.strip()))
    return commands


def hydra_config_name(script: Path) -> str | None:
    """The ``config_name`` of a script's ``@hydra.main``; None for a script that parses its own arguments."""
    found = re.search(r'@hydra\.main\([^)]*config_name="([^"]+)"', script.read_text())
    return found.group(1) if found else None


def entry_point(command: str) -> tuple[str, list[str]] | None:
    """(script path or ``-m module`` or ``make``, its arguments) of a README command; None for other tools."""
    words = [w for w in shlex.split(command) if w]
    while words and ENV_ASSIGNMENT.match(words[0]):  # MUJOCO_GL=egl python ...
        words.pop(0)
    if not words:
        return None
    if words[0] == "make":
        return "make", words[1:]
    if words[0] not in LAUNCHERS:
        return None
    words = words[1:]
    while words and words[0].startswith("-") and words[0] != "-m":  # torchrun --nproc_per_node=2
        words.pop(0)
    if words and words[0] == "-m":
        return f"-m {words[1]}", words[2:]
    return (words[0], words[1:]) if words else None


COMMANDS = [c for c in readme_commands() if entry_point(c) is not None]


def test_the_readme_has_commands() -> None:
    assert any(c.startswith("make run") for c in COMMANDS) and any("scripts/" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command: str) -> None:
    target, args = entry_point(command)
    if target == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
        assert set(a for a in args if "=" not in a) <= targets, f"{command}: no such make target"
        return
    if target.startswith("-m "):
        assert importlib.util.find_spec(target[3:]) is not None, f"{command}: no module {target[3:]}"
        return
    script = ROOT / target
    assert script.is_file(), f"{command}: no script {target}"
    name = hydra_config_name(script)
    if name is None:
        return
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    # placeholders the reader fills in (``checkpoint=...``, ``<serial>``) and the reader's own files (``my_*``)
    overrides = [a for a in overrides if not ("..." in a or "<" in a or a.split("=", 1)[1].startswith("my_"))]
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        OmegaConf.to_object(compose(name, overrides=overrides))  # unknown keys, wrong types, bad values: raise
