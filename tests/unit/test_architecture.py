"""The shape of the package: imports point one way, down the layers of
docs/architecture.md, with no cycle; the command layer and the network side never import
each other; and modules and classes stay readable in size.

The checks read the source with `ast`, so they see every import, including those inside
functions (imports under `if TYPE_CHECKING:` are for type checkers only and are skipped).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "crdtmds"

LAYERS: list[tuple[str, ...]] = [
    ("crdtmds", "crdtmds.errors"),
    ("crdtmds.core",),
    ("crdtmds.tls",),
    ("crdtmds.storage", "crdtmds.sync", "crdtmds.api_socket", "crdtmds.status_query"),
    ("crdtmds.client",),
    ("crdtmds.config",),
    ("crdtmds.app",),
    ("crdtmds.api", "crdtmds.net"),
    ("crdtmds.transports",),
    ("crdtmds.server",),
    ("crdtmds.bootstrap",),
    ("crdtmds.testing",),
]
"""Bottom first. A module may import its own part and the layers below it."""

SIBLINGS = {("crdtmds.api", "crdtmds.net"), ("crdtmds.net", "crdtmds.api")}
"""Parts of one layer that must never import each other."""

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The layer entry (from `LAYERS`) that `module` belongs to."""
    best = ""
    for layer in LAYERS:
        for part in layer:
            inside = module == part or (part != "crdtmds" and module.startswith(part + "."))
            if inside and len(part) > len(best):
                best = part
    return best


def layer_of(module: str) -> int:
    part = part_of(module)
    return next(i for i, layer in enumerate(LAYERS) if part in layer)


def runtime_imports(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(imported crdtmds module, line) of every import outside `if TYPE_CHECKING:`."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "crdtmds":
                for alias in node.names:
                    yield f"crdtmds.{alias.name}", node.lineno
            elif node.module.startswith("crdtmds."):
                yield node.module, node.lineno
                # `from crdtmds.core import model` imports the module crdtmds.core.model
                for alias in node.names:
                    yield f"{node.module}.{alias.name}", node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("crdtmds."):
                    yield alias.name, node.lineno


def import_graph(package: Path = PACKAGE) -> dict[str, list[tuple[str, int]]]:
    """Every module of `package` (a `crdtmds` folder) and the crdtmds modules it imports."""
    return {
        module_name(path, package.parent): list(runtime_imports(ast.parse(path.read_text())))
        for path in sorted(package.rglob("*.py"))
    }


def back_edges(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Every import that climbs a layer or crosses between siblings."""
    problems = []
    for module, imports in graph.items():
        for target, line in imports:
            if target == "crdtmds" or part_of(target) == part_of(module):
                continue
            pair = (part_of(module), part_of(target))
            if pair in SIBLINGS or layer_of(target) > layer_of(module):
                problems.append(f"{module}:{line} imports {target}")
            elif layer_of(target) == layer_of(module):
                problems.append(f"{module}:{line} imports {target} of its own layer")
    return problems


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Import cycles among modules (each found once, from its first module)."""
    edges = {m: {t for t, _ in imports if t in graph and t != m} for m, imports in graph.items()}
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return found


def test_imports_point_down_the_layers() -> None:
    graph = import_graph()
    unplaced = [m for m in graph if not part_of(m)]
    assert unplaced == [], "modules outside every layer: place them in LAYERS"
    assert back_edges(graph) == []


def test_there_is_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_catch_a_back_edge_and_a_cycle(tmp_path: Path) -> None:
    """The checks themselves fail on what they must refuse."""
    package = tmp_path / "crdtmds"
    for sub in ("core", "api", "net"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "core" / "model.py").write_text("from crdtmds.api.call import Call\n")
    (package / "api" / "call.py").write_text("from crdtmds.net.links import Links\n")
    (package / "net" / "links.py").write_text("from crdtmds.core.model import X\n")
    graph = import_graph(package)
    problems = back_edges(graph)
    assert any("crdtmds.core.model" in p and "crdtmds.api.call" in p for p in problems)
    assert any("crdtmds.api.call" in p and "crdtmds.net.links" in p for p in problems)
    assert cycles(graph) == [
        ["crdtmds.api.call", "crdtmds.net.links", "crdtmds.core.model", "crdtmds.api.call"]
    ]


def sources() -> list[Path]:
    return sorted([*PACKAGE.rglob("*.py"), *(ROOT / "cli").rglob("*.py")])


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_classes_stay_readable(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= MAX_MODULE_LINES, f"{path.name} is over {MAX_MODULE_LINES}"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            length = (node.end_lineno or node.lineno) - node.lineno
            assert length <= MAX_CLASS_LINES, f"class {node.name} is {length} lines"
