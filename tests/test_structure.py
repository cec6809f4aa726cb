"""The package's shape (ARCHITECTURE.md): one-way imports, no circles, families that import no other family,
and a convert/ that imports no family. Read from the source, so it costs nothing to run."""

import ast
import pathlib

import pytest

pytestmark = pytest.mark.backend_agnostic

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_vit"
FAMILIES = sorted(p.name for p in (PACKAGE / "applications").iterdir() if (p / "__init__.py").exists())


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports():
    """`{module: set of keras_vit modules it imports}`, counting imports inside functions too."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module, targets = _module_name(path), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_vit"):
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name.startswith("keras_vit"))
        graph[module] = targets
    return graph


def _part(module):
    """The room a module belongs to: a family folder, or a top-level subpackage."""
    parts = module.split(".")
    if module == "keras_vit.applications":  # the package's __init__ only re-exports the families
        return "keras_vit"
    if len(parts) > 2 and parts[1] == "applications" and parts[2] in FAMILIES:
        return f"applications.{parts[2]}"
    return parts[1] if len(parts) > 1 else "keras_vit"


def _part_graph():
    graph = _imports()
    known = set(graph)
    edges = {}
    for module, targets in graph.items():
        for target in targets:
            if target in known and _part(target) != _part(module):
                edges.setdefault(_part(module), set()).add(_part(target))
    return edges


def test_convert_and_layers_import_no_model_family():
    edges = _part_graph()
    assert edges.get("convert", set()) == set(), edges.get("convert")
    assert edges.get("layers", set()) == set(), edges.get("layers")


def test_families_import_no_other_family():
    edges = _part_graph()
    for family in FAMILIES:
        others = {part for part in edges.get(f"applications.{family}", ()) if part.startswith("applications.")}
        assert others == set(), f"{family} imports {others}"


def test_data_flows_one_way_and_there_are_no_circles():
    edges = _part_graph()
    below_training = {"applications", "convert", "layers", "data", *(f"applications.{f}" for f in FAMILIES)}
    for part in below_training:
        assert not edges.get(part, set()) & {"evaluation", "training", "tuning", "cli"}, (part, edges.get(part))
    assert "tuning" not in edges.get("training", set())

    def visit(node, path):
        assert node not in path, f"import circle: {' -> '.join([*path, node])}"
        for target in edges.get(node, ()):
            if target != "keras_vit":  # the package itself only re-exports
                visit(target, [*path, node])

    for node in edges:
        if node != "keras_vit":
            visit(node, [])
