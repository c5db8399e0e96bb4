"""Code health of a Python package: import circles between its modules and public definitions without a docstring.

    python -m tools.code_health [--package lazydet] [--function-imports]

Read from the source (the `ast`), nothing is imported or run. Exit code 0 when both counts are 0, 1 otherwise,
so a test can hold the line.

Import circles. A node is a module of the package (`a/b/__init__.py` is the module `a.b`). An edge M -> X means
that executing M's module level runs X's module level: `import a.b.c` and `from a.b import c` lead to `a.b.c`
when it is a module (else to `a.b`), relative imports are resolved, and the packages Python executes on the way
(`a.b` for `a.b.c`) are edges too, except those already being imported when M runs (M's own parent packages).
Imports anywhere at module level count (also inside `if`/`try`/class bodies), except under
`if TYPE_CHECKING:`. Imports inside functions run at call time, after every module has loaded, so they cannot
make an import fail; they are left out unless `--function-imports` is given (then they are edges as well,
which shows the layering a deferred import hides). A circle is a strongly connected component of two or more
modules; one cycle through it is printed.

Undocumented public definitions: module-level functions and classes whose name does not start with "_", and
the public methods (also properties, not their setters) of those classes, in every module whose own name
does not start with "_" (`__init__.py` counts). Dunder methods are covered by their class's docstring.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from dataclasses import dataclass


@dataclass
class Module:
    """One source file: its dotted `name`, `path`, whether it is a package `__init__`, and its parsed `tree`."""

    name: str
    path: str
    is_package: bool
    tree: ast.Module


def load_package(package_dir: str) -> dict[str, Module]:
    """Parse every `.py` file under `package_dir` (the folder holding the top `__init__.py`); returns
    {dotted module name: Module}. The top package's name is the folder's name."""
    package_dir = os.path.abspath(package_dir)
    root_parent = os.path.dirname(package_dir)
    modules = {}
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if os.path.isfile(os.path.join(folder, d, "__init__.py")))
        for file in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, file)
            parts = os.path.relpath(path, root_parent)[:-3].split(os.sep)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), filename=path)
            modules[".".join(parts)] = Module(".".join(parts), path, is_package, tree)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(body: list[ast.stmt], function_imports: bool):
    """The Import/ImportFrom statements executed with `body` (module level), recursing into compound statements;
    into function bodies only when `function_imports`."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.orelse, function_imports)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if function_imports:
                yield from _import_nodes(node.body, function_imports)
        else:
            for name in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, name, None)
                if isinstance(children, list):
                    yield from _import_nodes([c for c in children if isinstance(c, ast.AST)], function_imports)


def _imported_names(module: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted names a statement may refer to, most specific first (`from a import b` gives `a.b` and `a`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.name.split(".")
        if not module.is_package:
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def _modules_run(target: str, importer: str, modules: dict[str, Module]) -> set[str]:
    """The package modules whose module level runs when `importer` imports `target`: the deepest existing
    module of `target` and its parent packages that are not also `importer`'s parents (already running)."""
    parts = target.split(".")
    while parts and ".".join(parts) not in modules:
        parts = parts[:-1]
    importer_parents = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    run = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in run if m not in importer_parents and m != importer}


def build_import_graph(modules: dict[str, Module], function_imports: bool = False) -> dict[str, set[str]]:
    """{module: modules its import runs} restricted to the package (see the module docstring for the rules)."""
    graph = {}
    for name, module in modules.items():
        edges = set()
        for node in _import_nodes(module.tree.body, function_imports):
            targets = _imported_names(module, node)
            if isinstance(node, ast.ImportFrom):
                # `from a import b`: `a.b` if it is a module, else the name `b` inside `a`.
                submodules = [t for t in targets[:-1] if t in modules]
                targets = submodules + [targets[-1]]
            for target in targets:
                edges |= _modules_run(target, name, modules)
        graph[name] = edges
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) for every strongly connected component
    of two or more modules of `graph`, sorted."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def strongconnect(v):  # Tarjan's algorithm; the graphs here are a few hundred nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(_one_cycle(graph, c) for c in components)


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the alphabetically first module of `component` (breadth-first search)."""
    start = min(component)
    previous = {start: None}
    frontier = [start]
    while frontier:
        next_frontier = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if w not in previous:
                    previous[w] = v
                    next_frontier.append(w)
        frontier = next_frontier
    raise AssertionError(f"no cycle through {start}")  # cannot happen in a strongly connected component


def _is_setter(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter") for d in node.decorator_list)


def public_definitions(modules: dict[str, Module]):
    """Yields (path, line, kind, qualified name, has docstring) of every public definition (see module docstring)."""
    for name, module in sorted(modules.items()):
        if name.split(".")[-1].startswith("_") and not module.is_package:
            continue
        for node in module.tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"):
                continue
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            yield module.path, node.lineno, kind, node.name, ast.get_docstring(node) is not None
            if kind == "class":
                for item in node.body:
                    if (isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_")
                            and not _is_setter(item)):
                        yield (module.path, item.lineno, "method", f"{node.name}.{item.name}",
                               ast.get_docstring(item) is not None)


def main(argv=None) -> int:
    """Prints the report; returns 1 when there is a circle or an undocumented public definition, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--package", default="lazydet", help="folder of the package to check (default: lazydet)")
    parser.add_argument("--function-imports", action="store_true",
                        help="count imports inside functions as edges too (default: module level only)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.package, "__init__.py")):
        print(f"code_health: --package {args.package!r} is not a package folder (no __init__.py)", file=sys.stderr)
        return 2
    modules = load_package(args.package)
    graph = build_import_graph(modules, function_imports=args.function_imports)
    circles = import_circles(graph)
    where = "module-level and function-level" if args.function_imports else "module-level"
    print(f"import circles ({where} imports, {len(modules)} modules, "
          f"{sum(map(len, graph.values()))} edges): {len(circles)}")
    for cycle in circles:
        print("  " + " -> ".join(cycle))
    definitions = list(public_definitions(modules))
    missing = [d for d in definitions if not d[4]]
    print(f"public definitions without a docstring: {len(missing)} of {len(definitions)}")
    for path, line, kind, qualname, _ in missing:
        print(f"  {os.path.relpath(path, os.path.dirname(os.path.abspath(args.package)))}:{line}: {kind} {qualname}")
    return 1 if circles or missing else 0


if __name__ == "__main__":
    sys.exit(main())
