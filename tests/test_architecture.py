"""Import directions between packages (docs/architecture.md): a forbidden import fails here.

Every module under ``src/shopaug`` is parsed with :mod:`ast`; every ``import``, ``from ...
import`` (absolute or relative) and ``importlib.import_module("shopaug...")`` of a ``shopaug``
module, at any depth (lazy imports inside functions included, ``TYPE_CHECKING`` blocks too),
is checked against the rules below:

* every package and top-level module of ``shopaug`` has a layer in :data:`LAYERS`; a module
  may import its own package and packages of LOWER layers only (so the package graph has no
  cycle), and never one of :data:`ALSO_FORBIDDEN`;
* the modules' import-time graph (imports at module level, outside functions and
  ``TYPE_CHECKING``) has no cycle: a file-level cycle breaks depending on which file is
  imported first. Lazy imports inside functions may point back (a model directory dispatching
  to its kinds), and are checked by the layer rule only.

``docs/architecture.md`` carries :func:`render_layers` verbatim, so the document and the test
are the same rules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "shopaug"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

#: Layers from the bottom: a package imports only packages of lower layers (and itself).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "losses", "profiles", "__init__"),
    ("config", "privacy", "data", "encoders", "index", "samplers", "rundir", "manifest"),
    ("models", "llm", "feedback"),
    ("retrieval", "train"),
    ("eval", "serve"),
    ("augment",),
    ("online", "scale"),
    ("experiment", "simulate"),
    ("tune",),
    ("cli",),
]
#: Imports the layers would allow but the design forbids (docs/architecture.md says why).
ALSO_FORBIDDEN: dict[str, set[str]] = {
    "serve": {"train"},  # no training in the request path
    "augment": {"train"},  # transforms hold no trainable model
    "online": {"serve"},  # the service and the loop share only the feedback store
    "scale": {"feedback"},
}
LAYER = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def render_layers() -> str:
    """The rules as the Markdown block docs/architecture.md carries."""
    lines = ["| layer | packages (may import the layers below, never above or beside) |"]
    lines.append("|---|---|")
    for level in range(len(LAYERS) - 1, -1, -1):
        names = ", ".join(f"`{p}`" for p in LAYERS[level] if p != "__init__")
        lines.append(f"| {level} | {names} |")
    extra = "; ".join(
        f"`{package}` never imports {', '.join(f'`{p}`' for p in sorted(targets))}"
        for package, targets in sorted(ALSO_FORBIDDEN.items())
    )
    lines += ["", f"Also forbidden: {extra}."]
    return "\n".join(lines)


def _package(module: Path, root: Path) -> str:
    return module.relative_to(root).parts[0].removesuffix(".py")


def _module_name(module: Path, root: Path) -> str:
    parts = list(module.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["shopaug", *parts])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: Path, root: Path) -> Iterator[tuple[int, str, bool]]:
    """(line, imported dotted name, at import time?) of every shopaug import in ``module``."""
    tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    own = _module_name(module, root).split(".")
    package = own if module.name == "__init__.py" else own[:-1]

    def visit(node: ast.AST, eager: bool) -> Iterator[tuple[int, str, bool]]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            eager = False
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                yield from visit(child, False)
            for child in node.orelse:
                yield from visit(child, eager)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, eager
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                kept = package[: len(package) - (node.level - 1)]
                base = ".".join([*kept, *([node.module] if node.module else [])])
            for alias in node.names:  # `from shopaug.serve import deps` imports serve.deps
                yield node.lineno, f"{base}.{alias.name}", eager
        elif isinstance(node, ast.Call) and _is_import_call(node):
            argument = node.args[0] if node.args else None
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                yield node.lineno, argument.value, eager
        for child in ast.iter_child_nodes(node):
            yield from visit(child, eager)

    for line, name, eager in visit(tree, True):
        if name.split(".")[0] == "shopaug" and "." in name:
            yield line, name, eager


def _is_import_call(node: ast.Call) -> bool:
    function = node.func
    if isinstance(function, ast.Attribute) and function.attr == "import_module":
        return True
    return isinstance(function, ast.Name) and function.id in ("import_module", "__import__")


def violations(root: Path = SOURCE) -> list[str]:
    """Every import under ``root`` (a ``shopaug`` source folder) that breaks a layer rule, and
    every package without a layer, as readable lines."""
    problems: list[str] = []
    for module in sorted(root.rglob("*.py")):
        package = _package(module, root)
        where = module.relative_to(root.parent)
        if package not in LAYER:
            problems.append(f"{where}: package {package} has no layer in LAYERS")
            continue
        for line, name, _ in _imports(module, root):
            imported = name.split(".")[1]
            if imported not in LAYER:
                imported = "__init__"  # `from shopaug import __version__`
            if imported in (package, "__init__"):
                continue
            if LAYER[imported] >= LAYER[package]:
                problems.append(
                    f"{where}:{line}: {package} (layer {LAYER[package]}) imports "
                    f"shopaug.{imported} (layer {LAYER[imported]})"
                )
            elif imported in ALSO_FORBIDDEN.get(package, set()):
                problems.append(f"{where}:{line}: {package} imports shopaug.{imported}")
    return problems


def import_cycles(root: Path = SOURCE, *, eager_only: bool = True) -> list[list[str]]:
    """The cycles (strongly connected components of two or more modules) of the module graph
    under ``root``; ``eager_only``: imports at import time only (module level)."""
    modules = {_module_name(m, root): m for m in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, imported, eager in _imports(path, root):
            if eager_only and not eager:
                continue
            while imported and imported not in modules:  # a name inside a module
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return _strongly_connected(graph)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of one node are left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def test_no_forbidden_import() -> None:
    problems = violations()
    assert not problems, "forbidden imports (see docs/architecture.md):\n" + "\n".join(problems)


def test_no_import_time_cycle_between_files() -> None:
    cycles = import_cycles()
    assert not cycles, f"modules that import each other at import time: {cycles}"


def test_every_layer_names_an_existing_package() -> None:
    for package in LAYER:
        assert (SOURCE / package).is_dir() or (SOURCE / f"{package}.py").is_file(), package


def test_the_documented_rules_are_these_rules() -> None:
    assert render_layers() in DOCS.read_text(encoding="utf-8"), (
        "docs/architecture.md must carry render_layers() verbatim; paste:\n" + render_layers()
    )


# --- self-tests: the checker fails on what it must catch -----------------------------------


def _fake_tree(tmp_path: Path) -> Path:
    fake = tmp_path / "shopaug"
    for package in LAYER:
        if package == "__init__":
            (fake).mkdir(parents=True, exist_ok=True)
            (fake / "__init__.py").write_text("", encoding="utf-8")
            continue
        (fake / package).mkdir(parents=True, exist_ok=True)
        (fake / package / "__init__.py").write_text("", encoding="utf-8")
    return fake


@pytest.mark.parametrize("package", [p for p in LAYER if p not in ("__init__", LAYERS[-1][0])])
def test_a_planted_upward_import_fails_in_every_package(tmp_path: Path, package: str) -> None:
    fake = _fake_tree(tmp_path)
    above = next(p for level in LAYERS[LAYER[package] + 1 :] for p in level)
    (fake / package / "planted.py").write_text(
        f"def later():\n    import shopaug.{above}\n", encoding="utf-8"
    )
    assert violations(fake) == [
        f"shopaug/{package}/planted.py:2: {package} (layer {LAYER[package]}) imports "
        f"shopaug.{above} (layer {LAYER[above]})"
    ]


def test_relative_importlib_and_sideways_imports_are_seen(tmp_path: Path) -> None:
    fake = _fake_tree(tmp_path)
    (fake / "serve" / "app.py").write_text(
        "import importlib\n"
        "from ..cli import app\n"
        "from . import deps\n"
        "def later():\n    return importlib.import_module('shopaug.online.retrain')\n"
        "from shopaug.eval import metrics\n",
        encoding="utf-8",
    )
    assert violations(fake) == [
        "shopaug/serve/app.py:2: serve (layer 4) imports shopaug.cli (layer 9)",
        "shopaug/serve/app.py:5: serve (layer 4) imports shopaug.online (layer 6)",
        "shopaug/serve/app.py:6: serve (layer 4) imports shopaug.eval (layer 4)",
    ]
    (fake / "online" / "x.py").write_text("from shopaug.serve import app\n", encoding="utf-8")
    assert "shopaug/online/x.py:1: online imports shopaug.serve" in violations(fake)


def test_a_planted_cycle_fails(tmp_path: Path) -> None:
    fake = _fake_tree(tmp_path)
    (fake / "train" / "a.py").write_text("from shopaug.train.b import B\nA = 1\n", "utf-8")
    (fake / "train" / "b.py").write_text("from shopaug.train import a\nB = 1\n", "utf-8")
    (fake / "train" / "c.py").write_text(
        "def later():\n    from shopaug.train.a import A\n", encoding="utf-8"
    )
    (fake / "train" / "d.py").write_text("from shopaug.train.c import later\n", "utf-8")
    assert import_cycles(fake) == [["shopaug.train.a", "shopaug.train.b"]]
    # lazy imports are not import-time cycles, but the full graph sees them
    assert ["shopaug.train.c", "shopaug.train.d"] not in import_cycles(fake, eager_only=False)
    (fake / "train" / "c.py").write_text(
        "def later():\n    from shopaug.train.d import later\n", encoding="utf-8"
    )
    assert ["shopaug.train.c", "shopaug.train.d"] in import_cycles(fake, eager_only=False)
    # a package without a layer is named
    (fake / "newthing").mkdir()
    (fake / "newthing" / "__init__.py").write_text("", "utf-8")
    assert "shopaug/newthing/__init__.py: package newthing has no layer in LAYERS" in violations(
        fake
    )
