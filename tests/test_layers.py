"""The package's layers (docs/architecture.md): no import cycles among sam2med modules, also none through a
package's `__init__`, and the lower layers never import the server or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"


def _module_files() -> dict[str, Path]:
    modules = {}
    for path in (LIB / "sam2med").rglob("*.py"):
        parts = list(path.relative_to(LIB).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The sam2med modules `module` imports anywhere in its file (functions too), but not under `if TYPE_CHECKING`.
    Importing `a.b.c` also runs the `__init__` of `a` and `a.b`, unless `module` lives inside that package
    (a package is always initialised before its own modules)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for branch in ast.walk(tree)
                   if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
                   for node in ast.walk(branch)}
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if not name or name == module:
                continue
            found.add(name)
            parts = name.split(".")
            for i in range(1, len(parts)):
                ancestor = ".".join(parts[:i])
                if ancestor in modules and not module.startswith(ancestor + "."):
                    found.add(ancestor)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _module_files()
    return {module: _imported(module, path, modules) for module, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_among_sam2med_modules():
    assert _cycles(import_graph()) == []


def test_lower_layers_import_neither_the_server_nor_the_cli():
    """engine/, training/, evaluation/, dicom/, batch/ and the root modules never import sam2med.monailabel or sam2med.cli
    (`bench`, the speed comparison against MONAI Label's stock task, is a top-layer entry point like the CLI)."""
    upper = ("sam2med.monailabel", "sam2med.cli")
    top = upper + ("sam2med.bench",)
    wrong = {module: sorted(name for name in imported if name.startswith(upper))
             for module, imported in import_graph().items()
             if not module.startswith(top) and module != "sam2med"}
    assert {module: names for module, names in wrong.items() if names} == {}
