"""The tree keeps its shape: imports point down (no circle, not even under TYPE_CHECKING), and no
source file grows past what one reader holds in mind (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "bench", "cluster", "scheduler", "workers")
MAX_LINES = 320  # "about 300"; tests and generated stubs are exempt


def _source_files() -> list[Path]:
    roots = [ROOT / package for package in PACKAGES if (ROOT / package).is_dir()]
    return sorted(path for root in roots for path in root.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of ours that `path` imports, anywhere in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in modules and name != module)
    return found


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(graph[node]):
            cycle = visit(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def test_no_module_imports_itself_back_through_others():
    files = _source_files()
    modules = {_module_name(path) for path in files}
    graph = {_module_name(path): _imports(path, modules) for path in files}
    # A package's __init__ is imported with each of its modules: count that edge too.
    for module in modules:
        parent = module.rpartition(".")[0]
        if parent in graph:
            graph[module].add(parent)
    cycle = _find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_cycle_finder_sees_a_circle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_source_file_is_longer_than_about_300_lines():
    too_long = {
        str(path.relative_to(ROOT)): n
        for path in _source_files()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long, f"split these by concept: {too_long}"
