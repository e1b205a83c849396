"""No module of workbench imports itself back through others, imports inside functions included
(grimp, which import-linter uses, sees those): a circle is a sign that a shared name lives in the
wrong module, and it makes import order matter."""

from __future__ import annotations

import grimp


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_back():
    # Imports under `if TYPE_CHECKING:` (annotations only) never run: they make no circle.
    graph = grimp.build_graph("workbench", include_external_packages=False, exclude_type_checking_imports=True)
    cycles = _cycles(graph)
    details = []
    for cycle in cycles:
        for a in cycle:
            for b in cycle:
                for d in graph.get_import_details(importer=a, imported=b):
                    details.append(f"{a}:{d['line_number']} imports {b}")
    assert not cycles, "import circles:\n" + "\n".join(details)


def test_the_check_finds_a_circle():
    graph = grimp.ImportGraph()
    for m in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(m)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]
