"""The package's folders are layers: a module imports only from its own layer and the ones below it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "s2robot"
ORDER = ["common", "vision", "data", "policy", "sim", "real", "workflows"]
# A layer that may import only some of the layers below it (README, "Layout"): the arm needs no encoder or policy.
ONLY = {"real": {"common", "data"}}
EXTRA = {("data", "vision"): {"s2robot/data/features.py"}}  # the feature cache runs the encoder


def imported_layers(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s2robot."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("s2robot.")}
    return names


def test_lower_layers_never_import_higher_ones() -> None:
    bad = []
    for layer in ORDER:
        for path in sorted((PACKAGE / layer).glob("*.py")):
            rel = str(path.relative_to(PACKAGE.parent))
            for other in imported_layers(path) - {layer}:
                allowed = ORDER.index(other) < ORDER.index(layer) and (other != "vision" or layer != "data"
                                                                       or rel in EXTRA[("data", "vision")])
                allowed = allowed and other in ONLY.get(layer, {other})
                if not allowed:
                    bad.append(f"{rel} imports s2robot.{other}")
    assert not bad, bad


def test_envs_is_below_the_package() -> None:
    """``envs`` (MuJoCo scenes, the expert, positions: never torch) sits under every layer of ``s2robot``: it imports
    nothing of it, so the simulated env never loads the encoder, the policy or the arm."""
    envs = PACKAGE.parent / "envs"
    bad = [f"{p.relative_to(PACKAGE.parent)} imports s2robot.{layer}" for p in sorted(envs.glob("*.py"))
           for layer in sorted(imported_layers(p))]
    assert not bad, bad
    top = {node.names[0].name.split(".")[0] for p in envs.glob("*.py") for node in ast.walk(ast.parse(p.read_text()))
           if isinstance(node, ast.Import)}
    assert not top & {"torch", "s2robot"}, top


def test_envs_knows_nothing_of_the_arm() -> None:
    """The arm env registers from its own layer (``s2robot/real/__init__.py``): no file of ``envs`` names it, not even
    as an entry-point string, so the simulated scene and the arm never depend on each other both ways."""
    envs = PACKAGE.parent / "envs"
    named = ("s2robot.real", "s2robot/real", "FrankaReal")
    bad = [f"{p.relative_to(PACKAGE.parent)} names {n}" for p in sorted(envs.glob("*.py")) for n in named
           if n in p.read_text()]
    assert not bad, bad
