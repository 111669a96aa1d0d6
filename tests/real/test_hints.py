"""Every command the arm's messages print runs as printed: a ``python scripts/...`` hint parses with that script's own
parser (argparse, or hydra for an entry point), a hydra override composes into the recording's config, a ``pip
install`` of the project names one of its extras; the few tools outside the project are named as such."""

from __future__ import annotations

import importlib.util
import re
import shlex
import socket
import tomllib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from s2robot.real.arm import ArmError, check_reachable, hand_hint, recover_hint
from s2robot.workflows.configs import register_configs

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "s2robot" / "real").glob("*.py")), ROOT / "scripts" / "real_arm.py"]
TICKED = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")  # `hint`, not ``docstring literals``
EXTERNAL = {"ping", "v4l2-ctl", "rs-enumerate-devices"}  # the OS's and the camera SDK's tools, not the project's
HOST = "172.16.0.2"


def written_hints() -> list[str]:
    """Hints written out in the sources, ``{host}``-like placeholders filled in; hints a function builds
    (```{recover_command(...)}```) come from ``printed_hints``."""
    found = {m.replace("{host}", HOST).replace("{self.host}", HOST)
             for path in SOURCES for m in TICKED.findall(path.read_text())}
    return sorted(h for h in found if not h.startswith("{"))


def printed_hints() -> list[str]:
    """The hints of messages the arm code prints after a reflex, a failed hand command, or for an unreachable host."""
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        check_reachable("127.0.0.1", timeout=1.0, port=port)
    except ArmError as err:
        unreachable = str(err)
    return [h for message in (recover_hint(HOST), hand_hint(HOST), unreachable) for h in TICKED.findall(message)]


def documented_commands() -> list[str]:
    """``scripts/real_arm.py`` commands in docs/real-arm.md and the README."""
    text = (ROOT / "docs" / "real-arm.md").read_text() + (ROOT / "README.md").read_text()
    return sorted({m.strip() for m in re.findall(r"python scripts/real_arm\.py [^`\n#]*", text)})


HINTS = sorted(set(written_hints() + printed_hints() + documented_commands()))


def test_the_recovery_hints_are_found() -> None:
    assert f"python scripts/real_arm.py recover --host {HOST}" in HINTS
    assert f"python scripts/real_arm.py homing --host {HOST}" in HINTS
    assert "env=franka_sim" in HINTS


def _script(path: Path) -> object:
    spec = importlib.util.spec_from_file_location(f"_hint_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compose(config: str, overrides: list[str]) -> None:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        OmegaConf.to_object(compose(config, overrides=overrides))  # unknown keys, wrong types, bad values: raise


@pytest.mark.parametrize("hint", HINTS)
def test_hint_runs_as_printed(hint: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The hint parses with the parser of what it runs (nothing is run)."""
    words = shlex.split(re.sub(r"<[^>]+>", "X", hint))  # a <placeholder> the reader fills in
    if words[0] in EXTERNAL:
        return
    if words[0] == "python":
        script = ROOT / words[1]
        assert script.is_file(), f"{hint}: no script {words[1]}"
        parser = getattr(_script(script), "build_parser", None)
        if parser is None:
            config = re.search(r'config_name="([^"]+)"', script.read_text()).group(1)
            _compose(config, words[2:])
            return
        try:
            parser().parse_args(words[2:])
        except SystemExit:
            pytest.fail(f"{hint!r} does not parse: {capsys.readouterr().err}")
    elif words[:2] == ["pip", "install"]:
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for word in words[2:]:
            if word.startswith(".["):
                assert set(word[2:-1].split(",")) <= set(extras), f"{hint}: pyproject.toml has extras {list(extras)}"
    elif re.fullmatch(r"[\w.@/]+=\S+", hint):
        _compose("record", [hint])
    else:
        pytest.fail(f"{hint!r}: not a command this test knows how to check; add its kind here")
