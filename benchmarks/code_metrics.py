"""Code metrics of a detkit checkout: lines per package, the longest functions, the import graph and its cycles.

    python benchmarks/code_metrics.py                  # this checkout
    python benchmarks/code_metrics.py OLD_CHECKOUT .   # two checkouts side by side (before / after)

Everything is read from the source with ``ast``; nothing is imported, so any checkout (an old clone, a branch) can
be measured by the same script.

* **Lines** per package of ``detkit/`` (a package's own ``.py`` files, sub-packages apart): physical lines, and code
  lines (no blank line, comment-only line or docstring).
* **Longest functions**: every ``def`` (methods as ``Class.method``, nested functions as ``outer.inner``), by lines
  from the ``def`` (decorators excluded) to its last line.
* **Import graph** of the ``detkit`` modules: an edge ``a -> b`` for every ``import`` in ``a`` that names module
  ``b`` of the package (``from detkit.x import y`` names ``detkit.x.y`` when that is a module, else ``detkit.x``;
  relative imports resolved). Imports at module level and inside functions both count (a function-level import
  still needs the other module at run time; it only hides a cycle from Python's import machinery); imports under
  ``if TYPE_CHECKING:`` do not (they never run). An import names its module only: ``detkit.a.b`` runs
  ``detkit/a/__init__.py`` first, but that is not counted as an edge (every module of a package would otherwise be
  in a cycle with an ``__init__`` that re-exports it). The configs (``detkit/configs``: files the config loader runs
  by path) are not modules of the graph.
* **Cycles**: the strongly connected components of more than one module (or a module importing itself), each with
  the import statements (file:line) of its edges. ``tests/test_import_cycles.py`` fails on any.
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "detkit"
EXCLUDED_PARTS = ("configs", "__pycache__")  # detkit/configs: config files, run by path (not imported)


# ----------------------------------------------------------------------------------------------------------------
# files and modules


def package_files(root: Path) -> Iterator[Path]:
    """The ``.py`` files of ``root/detkit`` (configs and caches excluded), sorted."""
    base = root / PACKAGE
    for path in sorted(base.rglob("*.py")):
        if not any(part in EXCLUDED_PARTS for part in path.relative_to(base).parts):
            yield path


def module_name(root: Path, path: Path) -> str:
    """``root/detkit/a/b.py`` -> ``detkit.a.b``; ``root/detkit/a/__init__.py`` -> ``detkit.a``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# lines


def docstring_lines(tree: ast.Module) -> set[int]:
    """Line numbers taken by the docstrings of the module, its classes and functions."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str) and first.end_lineno is not None):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source: str, tree: ast.Module) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    with_tokens: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                        tokenize.ENDMARKER):
            continue
        with_tokens.update(range(tok.start[0], tok.end[0] + 1))
    return len(with_tokens - docstring_lines(tree))


@dataclass
class PackageLines:
    files: int = 0
    lines: int = 0
    code: int = 0


def lines_per_package(root: Path) -> dict[str, PackageLines]:
    """``{"detkit/assigners": PackageLines, ...}``: each package's own files (sub-packages apart), plus ``detkit
    (all)``, the whole package."""
    table: dict[str, PackageLines] = {}
    total = PackageLines()
    for path in package_files(root):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, str(path))
        n_lines, n_code = len(source.splitlines()), code_lines(source, tree)
        row = table.setdefault(path.parent.relative_to(root).as_posix(), PackageLines())
        for r in (row, total):
            r.files += 1
            r.lines += n_lines
            r.code += n_code
    table[f"{PACKAGE} (all)"] = total
    return table


# ----------------------------------------------------------------------------------------------------------------
# functions


@dataclass(frozen=True)
class Function:
    name: str  # Class.method, outer.inner
    path: str  # relative to the checkout
    line: int
    lines: int


def functions(root: Path) -> list[Function]:
    """Every function of the package, longest first (ties by path and line)."""
    found: list[Function] = []

    def visit(node: ast.AST, prefix: str, path: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                found.append(Function(name, path, child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1))
                visit(child, f"{name}.", path)
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", path)
            else:
                visit(child, prefix, path)

    for path in package_files(root):
        visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), "", path.relative_to(root).as_posix())
    return sorted(found, key=lambda f: (-f.lines, f.path, f.line))


# ----------------------------------------------------------------------------------------------------------------
# import graph


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module of the package
    path: str  # file of the import, relative to the checkout
    line: int
    in_function: bool


@dataclass
class ImportGraph:
    modules: list[str]
    imports: list[Import] = field(default_factory=list)

    def edges(self) -> dict[str, set[str]]:
        """``{module: {modules it imports}}`` (every module a key)."""
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for imp in self.imports:
            out[imp.source].add(imp.target)
        return out

    def cycles(self) -> list[list[str]]:
        """Strongly connected components with a cycle (more than one module, or one importing itself), each
        sorted, the list sorted."""
        edges = self.edges()
        return sorted(sorted(c) for c in strongly_connected(edges)
                      if len(c) > 1 or next(iter(c)) in edges[next(iter(c))])

    def cycle_imports(self, component: Iterable[str]) -> list[Import]:
        """The imports between the modules of one cycle, by path and line."""
        members = set(component)
        return sorted((i for i in self.imports if i.source in members and i.target in members),
                      key=lambda i: (i.path, i.line))


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module of ``from {"." * level}{name} import ...`` written in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def _imports_of(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> Iterator[tuple[str, int, bool]]:
    """``(target module, line, in a function)`` for each import of a package module in ``tree``."""

    def target(name: str) -> str | None:
        # the longest known module that ``name`` is or lies in (``detkit.x.y.Z`` -> ``detkit.x.y``)
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in known:
                return candidate
        return None

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                yield from (x for stmt in child.orelse for x in walk_stmt(stmt, in_function))
                continue
            yield from walk_stmt(child, in_function)

    def walk_stmt(child: ast.AST, in_function: bool) -> Iterator[tuple[str, int, bool]]:
        if isinstance(child, ast.Import):
            for alias in child.names:
                t = target(alias.name)
                if t is not None:
                    yield t, child.lineno, in_function
        elif isinstance(child, ast.ImportFrom):
            base = _resolve(module, is_package, child.level, child.module)
            for alias in child.names:
                t = target(f"{base}.{alias.name}") if alias.name != "*" else target(base)
                if t is not None:
                    yield t, child.lineno, in_function
        else:
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from walk(child, inner)

    yield from walk(tree, False)


def import_graph(root: Path) -> ImportGraph:
    """The import graph of ``root/detkit`` (see the module docstring for what counts as an edge)."""
    paths = {module_name(root, p): p for p in package_files(root)}
    graph = ImportGraph(sorted(paths))
    known = set(paths)
    for module, path in sorted(paths.items()):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        seen: set[tuple[str, int]] = set()
        for t, line, in_function in _imports_of(tree, module, path.name == "__init__.py", known):
            # (a package's `from . import name` of a non-module name resolves to the package itself: no edge)
            if (t != module or path.name != "__init__.py") and (t, line) not in seen:
                seen.add((t, line))
                graph.imports.append(Import(module, t, path.relative_to(root).as_posix(), line, in_function))
    return graph


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of ``edges`` (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


# ----------------------------------------------------------------------------------------------------------------
# report


def _describe_cycles(graph: ImportGraph) -> list[str]:
    out = []
    for component in graph.cycles():
        out.append(f"- {' <-> '.join(component)}")
        for imp in graph.cycle_imports(component):
            where = "in a function" if imp.in_function else "module level"
            out.append(f"    - {imp.source} -> {imp.target} ({imp.path}:{imp.line}, {where})")
    return out or ["- none"]


def report(roots: list[Path], top: int = 15) -> str:
    """The markdown report of one or more checkouts (the first is 'before' when there are two)."""
    names = [str(r) for r in roots]
    out: list[str] = []
    tables = [lines_per_package(r) for r in roots]
    packages = sorted(set().union(*tables), key=lambda p: (p.endswith("(all)"), p))
    out += ["## Lines per package (own files; code = no blank, comment or docstring line)", ""]
    out.append("| package | " + " | ".join(f"files / lines / code: {n}" for n in names) + " |")
    out.append("|---|" + "---|" * len(roots))
    for pkg in packages:
        cells = []
        for t in tables:
            row = t.get(pkg)
            cells.append(f"{row.files} / {row.lines:,} / {row.code:,}" if row else "-")
        out.append(f"| {pkg} | " + " | ".join(cells) + " |")
    for root in roots:
        out += ["", f"## The {top} longest functions: {root}", "", "| lines | function | where |", "|---|---|---|"]
        out += [f"| {f.lines} | {f.name} | {f.path}:{f.line} |" for f in functions(root)[:top]]
    for root in roots:
        graph = import_graph(root)
        hidden = sum(i.in_function for i in graph.imports)
        edges = sum(len(v) for v in graph.edges().values())
        out += ["", f"## Import graph: {root}", "",
                f"{len(graph.modules)} modules, {edges} edges; {len(graph.imports)} import statements of package "
                f"modules, {hidden} of them inside functions.", "", "Cycles:"]
        out += _describe_cycles(graph)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("roots", nargs="*", type=Path, default=[Path(__file__).resolve().parents[1]],
                        help="checkouts to measure (default: this one); two: before and after")
    parser.add_argument("--top", type=int, default=15, help="how many of the longest functions to list")
    args = parser.parse_args(argv)
    for root in args.roots:
        if not (root / PACKAGE).is_dir():
            print(f"error: {root}: no {PACKAGE}/ package folder there", file=sys.stderr)
            return 2
    print(report(args.roots, args.top), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
