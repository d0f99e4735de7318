"""Import directions between packages (docs/architecture.md): a forbidden import fails here.

Every module under ``src/shopaug`` is parsed with :mod:`ast`; every ``import`` and
``from ... import`` of a ``shopaug`` module, at any depth (lazy imports inside functions
included, ``TYPE_CHECKING`` blocks too), is checked against the rules below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "shopaug"

#: package -> packages it must never import (top-level names under shopaug).
FORBIDDEN: dict[str, set[str]] = {
    "serve": {"online", "simulate", "experiment", "train", "tune", "cli"},
    "online": {"serve", "simulate", "experiment", "cli"},
    "feedback": {"serve", "online", "simulate", "models", "train", "experiment", "cli"},
    "data": {
        "encoders",
        "index",
        "models",
        "train",
        "serve",
        "online",
        "retrieval",
        "augment",
        "experiment",
    },
    "encoders": {"models", "train", "serve", "online", "retrieval", "augment", "experiment"},
    "index": {"encoders", "models", "train", "serve", "online", "retrieval", "experiment"},
    "models": {"experiment", "serve", "online", "simulate", "retrieval", "augment", "eval"},
    "retrieval": {"serve", "online", "simulate", "train", "experiment", "augment", "eval"},
    "eval": {"serve", "online", "simulate", "experiment"},
    "augment": {"serve", "online", "simulate", "experiment", "train"},
    # the same transforms on Ray: below experiment, beside serve and online
    "scale": {"serve", "online", "simulate", "experiment", "tune", "feedback"},
    # the bottom layer: feedback, llm and augment all scrub personal data through it
    "privacy": {
        "data",
        "encoders",
        "index",
        "models",
        "retrieval",
        "augment",
        "llm",
        "samplers",
        "losses",
        "train",
        "eval",
        "experiment",
        "tune",
        "feedback",
        "serve",
        "online",
        "simulate",
        "scale",
    },
}
#: nothing may import the command line.
EVERYONE_FORBIDDEN = {"cli"}


def _package(module: Path, root: Path) -> str:
    return module.relative_to(root).parts[0].removesuffix(".py")


def _imported_packages(module: Path, root: Path) -> list[tuple[int, str]]:
    """(line, top-level shopaug package) of every shopaug import in ``module``."""
    tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "shopaug":  # from shopaug import cli
                names = [f"shopaug.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            package = module.relative_to(root).parts[:-1]
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(("shopaug", *base, *([node.module] if node.module else [])))
            names = [target]
        for name in names:
            parts = name.split(".")
            if parts[0] == "shopaug" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return sorted(found)


def violations(root: Path = SOURCE) -> list[str]:
    """Every forbidden import under ``root`` (a ``shopaug`` source folder), as readable lines."""
    problems: list[str] = []
    for module in sorted(root.rglob("*.py")):
        package = _package(module, root)
        forbidden = FORBIDDEN.get(package, set()) | (
            EVERYONE_FORBIDDEN if package != "cli" else set()
        )
        for line, imported in _imported_packages(module, root):
            if imported != package and imported in forbidden:
                where = module.relative_to(root.parent)
                problems.append(f"{where}:{line}: {package} imports shopaug.{imported}")
    return problems


def test_no_forbidden_import() -> None:
    problems = violations()
    assert not problems, "forbidden imports (see docs/architecture.md):\n" + "\n".join(problems)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    fake = tmp_path / "shopaug"
    (fake / "serve").mkdir(parents=True)
    (fake / "serve" / "app.py").write_text(
        "def later():\n    from shopaug.online.retrain import run_online_round\n"
        "from ..cli import app\n",
        encoding="utf-8",
    )
    (fake / "online").mkdir()
    (fake / "online" / "ok.py").write_text("import shopaug.models.model_dir\n", encoding="utf-8")
    assert violations(fake) == [
        "shopaug/serve/app.py:2: serve imports shopaug.online",
        "shopaug/serve/app.py:3: serve imports shopaug.cli",
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_every_ruled_package_exists(package: str) -> None:
    assert (SOURCE / package).is_dir(), f"docs/architecture.md rules a missing package {package}"
