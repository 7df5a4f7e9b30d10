"""The import graph of the packages has no circles: a module never imports, directly or
through others, a module that imports it (function-level imports count; those under
``if TYPE_CHECKING:`` do not). A package's ``__init__`` is its face, not a room: importing
a package (``from hogn.graph import GraphBatch``) from outside it counts as importing
every room its face imports when it is imported (lazy faces, ``hogn/_lazy.py``, import
none); from inside, the face has already run."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hogn", "systems", "meta")

#: Circles known and not yet broken, each as the sorted tuple of its modules: a new
#: circle fails the test. None is left: the last one (systems.arrays, systems.ase_data,
#: systems.dataset) was broken by building a dataset's fields apart from the class
#: (systems.array_fields, systems.ase_fields, below systems.dataset).
KNOWN: set[tuple[str, ...]] = set()


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts)] = path
    return found


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, module: str, modules: dict[str, Path],
             faces: tuple[str, ...] = ()) -> set[str]:
    """The package modules (rooms) ``module`` imports (outside ``TYPE_CHECKING``
    blocks), a package standing for the rooms its face imports."""
    out: set[str] = set()
    package = module.rsplit(".", 1)[0]
    if package.endswith(".__init__"):
        package = package[: -len(".__init__")]

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.add(base)
            for alias in node.names:  # `from pkg import submodule`
                out.add(f"{base}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    rooms: set[str] = set()
    for name in out:
        face = f"{name}.__init__"
        inside = module.startswith(f"{name}.")  # the face runs before its own rooms
        if face in modules and name not in faces and not inside:  # the rooms its face imports
            rooms |= _imports(ast.parse(modules[face].read_text()), face, modules,
                              (*faces, name))
        elif name in modules and not name.endswith("__init__"):
            rooms.add(name)
    return rooms - {module}


def import_graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    for module, path in modules.items():
        if module.endswith("__init__"):
            continue  # a package's face: it hands names on
        graph.add_node(module)
        for target in _imports(ast.parse(path.read_text()), module, modules):
            graph.add_edge(module, target)
    return graph


def circles(graph: nx.DiGraph) -> set[tuple[str, ...]]:
    return {tuple(sorted(c)) for c in nx.strongly_connected_components(graph) if len(c) > 1}


def test_the_reader_finds_a_circle():
    """The check can fail: two modules importing each other make a circle."""
    graph = nx.DiGraph([("a.x", "a.y"), ("a.y", "a.z"), ("a.z", "a.x"), ("a.z", "a.w")])
    assert circles(graph) == {("a.x", "a.y", "a.z")}
    tree = ast.parse("import hogn.io\nfrom hogn import graph\nif TYPE_CHECKING:\n"
                     "    from hogn import nn\ndef f():\n    from hogn.models import base\n")
    modules = _modules()
    # a package: importing it imports the rooms its face imports (not hogn.graph.cells,
    # which only hogn.graph.radius imports)
    graph_rooms = {f"hogn.graph.{m}" for m in ("batch", "complete", "minimum_image",
                                               "neighbours", "radius", "segments")}
    found = _imports(tree, "hogn.rollout", modules)
    assert {"hogn.io", "hogn.models.base", *graph_rooms} <= found
    assert not any(m == "hogn.nn" or m.startswith("hogn.nn.") for m in found)


def test_no_import_circles():
    graph = import_graph()
    assert graph.number_of_edges() > 100  # the reader sees the house
    found = circles(graph)
    new = found - KNOWN
    assert not new, f"import circles: {sorted(new)}"
    assert found == KNOWN, f"circles gone from KNOWN (remove them there): {KNOWN - found}"
