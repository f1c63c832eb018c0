"""Every module imports only its own layer or the ones below it (README, "Layout"), and no modules
import each other in a circle.

Layers, low to high: base -> world -> data -> train | eval -> reports -> commands. ``train`` and
``eval`` sit side by side and neither may import the other. Inside a layer the imports form no
circle either: modules that need each other are one module, or share a lower one. Imports inside
functions and under ``TYPE_CHECKING`` count: a lazy import is still a dependency, just one that
fails later.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import swapbench

PACKAGE = Path(swapbench.__file__).parent

RANK = {"base": 0, "world": 1, "data": 2, "train": 3, "eval": 3, "reports": 4, "commands": 5}
SIBLINGS = {("train", "eval"), ("eval", "train")}

# The command layer: swapbench.commands (one module per subcommand) and the dispatcher above it.
COMMANDS = {"swapbench.cli", "swapbench.__main__"}

# Crossings that are known and not yet removed: (importer, imported). Shrinks, never grows.
ALLOWED: set[tuple[str, str]] = set()


def layer_of(module: str) -> str:
    if module in COMMANDS or module == "swapbench.commands" or module.startswith("swapbench.commands."):
        return "commands"
    parts = module.split(".")
    # Anything else at the package's top level is base: a new top-level module may import only base.
    return parts[1] if len(parts) > 1 and parts[1] in ("world", "data", "train", "eval", "reports") else "base"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every swapbench module `path` imports, at any depth of the tree (functions included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "swapbench"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "swapbench":
                continue
            # `from swapbench.eval import schema` imports the submodule swapbench.eval.schema.
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (PACKAGE.parent / Path(*sub.split("."))).is_dir()
                found.append((node.lineno, sub if is_module else target))
    return found


def crossings() -> set[tuple[str, str, str]]:
    out = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        low = layer_of(importer)
        for line, target in imported_modules(path):
            high = layer_of(target)
            if RANK[high] > RANK[low] or (low, high) in SIBLINGS:
                out.add((importer, target,
                         f"{path.relative_to(PACKAGE.parent)}:{line} {importer} ({low}) -> {target} ({high})"))
    return out


def import_graph() -> dict[str, set[str]]:
    """Every swapbench module -> the swapbench modules it imports."""
    return {module_name(path): {target for _, target in imported_modules(path)}
            for path in sorted(PACKAGE.rglob("*.py"))}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: each largest set of modules that all reach one another, sorted."""
    reach = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen
    return sorted({tuple(sorted(m for m in reach[start] if start in reach.get(m, ()))) for start in graph
                   if start in reach[start]})


def test_no_module_imports_upward_or_across() -> None:
    found = crossings()
    new = sorted(where for importer, target, where in found if (importer, target) not in ALLOWED)
    assert not new, "imports against the layering:\n" + "\n".join(new)


def test_allow_list_has_no_stale_entries() -> None:
    live = {(importer, target) for importer, target, _ in crossings()}
    assert not sorted(ALLOWED - live), "remove these fixed crossings from ALLOWED"


def test_no_import_circle() -> None:
    graph = import_graph()
    found = circles(graph)
    edges = [f"{a} -> {b}" for circle in found for a in circle for b in sorted(graph[a] & set(circle))]
    assert not found, "modules that import each other in a circle:\n" + "\n".join(edges)


def test_circles_are_found_at_any_length_and_only_there() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": set(), "f": {"f"}, "g": {"a"}}
    assert circles(graph) == [("a", "b", "c"), ("f",)]
    assert circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(("module", "layer"), [
    ("swapbench.config", "base"), ("swapbench.loading", "base"), ("swapbench.world.generator", "world"),
    ("swapbench.edits.words", "base"), ("swapbench.train.recipe", "train"), ("swapbench.eval.metrics", "eval"),
    ("swapbench.reports.html", "reports"), ("swapbench.commands.world_build", "commands"),
    ("swapbench.cli", "commands"),
])
def test_layer_map(module: str, layer: str) -> None:
    assert layer_of(module) == layer


def test_detects_an_import_inside_a_function() -> None:
    # The walker must see lazy imports, or the allow-list would hide real dependencies.
    path = PACKAGE / "train" / "recipe.py"
    lazy = [target for _, target in imported_modules(path)]
    assert "swapbench.train.model_card" in lazy


def test_every_subcommand_lives_in_the_command_layer() -> None:
    from swapbench.cli import COMMANDS as SUBCOMMANDS

    assert {layer_of(module) for module in SUBCOMMANDS.values()} == {"commands"}
    for module in SUBCOMMANDS.values():
        assert (PACKAGE.parent / Path(*module.split("."))).with_suffix(".py").is_file(), module
