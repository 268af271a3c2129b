"""What the edge imports, read from the source: the import graph from its entry points.

:func:`edge_imports` walks every ``import`` of ``edge_node.app`` and ``edge_node.cli`` (at
module level or inside functions; not under ``if TYPE_CHECKING:``), follows the imports
of first-party modules, and returns the first-party modules reached and the third-party
top-level modules they import. The edge image must hold exactly those packages, and its
dependencies must provide those modules.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EDGE_ENTRY_POINTS = ("edge_node.app", "edge_node.cli")


@dataclass(frozen=True)
class EdgeImports:
    modules: frozenset[str]  # first-party modules, dotted
    third_party: frozenset[str]  # top-level names of the other modules imported

    @property
    def packages(self) -> frozenset[str]:
        """The first-party top-level packages the edge needs."""
        return frozenset(name.split(".")[0] for name in self.modules)


def first_party_packages(root: Path = REPO_ROOT) -> frozenset[str]:
    return frozenset(p.parent.name for p in root.glob("*/__init__.py"))


def module_file(name: str, root: Path = REPO_ROOT) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def edge_imports(
    entry_points: Iterable[str] = EDGE_ENTRY_POINTS, root: Path = REPO_ROOT
) -> EdgeImports:
    ours = first_party_packages(root)
    seen: set[str] = set()
    third_party: set[str] = set()
    pending = list(entry_points)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = module_file(name, root)
        if path is None:
            raise AssertionError(f"{name} is imported but has no source under {root}")
        seen.add(name)
        parts = name.split(".")
        pending.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        is_package = path.name == "__init__.py"
        for imported in _imports(ast.parse(path.read_text(encoding="utf-8")), name, is_package):
            top = imported.split(".")[0]
            if top in ours:
                target = imported if module_file(imported, root) else imported.rpartition(".")[0]
                if module_file(target, root) is not None:
                    pending.append(target)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return EdgeImports(frozenset(seen), frozenset(third_party))


def _imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    """Dotted names imported anywhere in ``tree``; for ``from a import b`` both ``a`` and
    ``a.b`` (``b`` may be a submodule)."""
    for node in _walk_outside_type_checking(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def _walk_outside_type_checking(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield child
                yield from _walk_outside_type_checking(child)
            continue
        yield node
        yield from _walk_outside_type_checking(node)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )
