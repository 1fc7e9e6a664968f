"""The package's folders show its architecture, and imports run downwards only.

Rooms are the root modules and the subpackages of cog_assets (as ../shared/tools/
import_graph.py counts them); every import statement counts, lazy and type-checking ones
too, because they tie the files together all the same."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cog_assets"
TESTS = Path(__file__).resolve().parent
BENCH = PACKAGE.parent / "bench"
MAX_ROOT_MODULES = 8
MAX_FLOORS = 8


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, known: set[str]) -> set[str]:
    """The package's modules `path` imports (a `from x import y` names x.y where that is one)."""
    name = module_name(path)
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            stem = base[:len(base) - node.level + 1] if node.level > 1 else base
            module = (".".join(stem + [node.module] if node.module else stem) if node.level
                      else node.module or "")
            candidates = [f"{module}.{a.name}" for a in node.names] + [module]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                out.add(candidate)
                break
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported(path, set(files)) for name, path in files.items()}


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def room_graph() -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for module, targets in graph().items():
        if room(module) is None:
            continue
        rooms.setdefault(room(module), set()).update(
            room(t) for t in targets if room(t) not in (None, room(module)))
    return rooms


def test_no_module_imports_another_that_imports_it_back():
    try:
        tuple(TopologicalSorter(graph()).static_order())
    except CycleError as exc:
        raise AssertionError(f"an import circle between modules: {exc.args[1]}") from None


def test_rooms_import_downwards_only_and_stand_at_most_eight_floors_high():
    rooms = room_graph()
    try:
        order = tuple(TopologicalSorter(rooms).static_order())
    except CycleError as exc:
        raise AssertionError(f"an import circle between rooms: {exc.args[1]}") from None
    floor: dict[str, int] = {}
    for name in order:  # dependencies first
        floor[name] = 1 + max((floor[d] for d in rooms.get(name, ())), default=0)
    assert max(floor.values()) <= MAX_FLOORS, floor


def test_the_root_holds_only_the_entry_modules():
    roots = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(roots) <= MAX_ROOT_MODULES, roots


def test_every_subpackage_has_a_test_folder():
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert [p for p in packages if not (TESTS / p).is_dir()] == []


def test_benchmarks_import_no_tests():
    offenders = [p.name for p in BENCH.glob("*.py") if "cog_assets_tests" in p.read_text()]
    assert offenders == []
