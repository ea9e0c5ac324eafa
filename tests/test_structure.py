"""The house's shape, checked by reading the source (ast only: nothing is imported, a second).

Four rules for every ``diffkit/**/*.py``:

1. **Files** hold at most :data:`MAX_FILE_LINES` lines, except the data tables in
   :data:`DATA_TABLES` (each with its reason).
2. **Functions** (and methods, nested ones included) span at most :data:`MAX_FUNCTION_LINES`
   lines, from ``def`` (decorators excluded) to the last line of the body.
3. **No import cycle** among diffkit's modules, counting the imports that run when a module is
   imported: those at module level, including those inside a module-level ``if``/``try``.
   An import inside a function runs when the function is called, after every module has loaded,
   so it cannot make a cycle at import time and is not counted. ``from . import x`` where ``x``
   is a submodule is an edge to that submodule (a parent package is imported before its children
   in any case, so the edge child → parent's ``__init__`` is counted only when a name defined
   in the ``__init__`` is imported).
4. **No private name crosses modules**: ``from .other import _name`` is refused, wherever the
   import sits. Make the name public in the module that owns it (a private module, ``_x.py``,
   may hold public names). Importing a private *module* (``from . import _adaptive``,
   ``from ._intervals import share_interval``) is fine.

:data:`KNOWN` lists today's violations in code other people are rewriting; the test fails if
a violation is not listed, and also if a listed one is gone (so the list can only shrink).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "diffkit"

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80

#: Files allowed past MAX_FILE_LINES because they are data, not logic (path → why).
DATA_TABLES: dict[str, str] = {}

#: Known violations awaiting the rewrites in flight (issue 24), by what they are, not by their
#: size (the size is in the message). The test fails when an entry no longer occurs: remove it then.
KNOWN: set[str] = set()


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _target(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute name of the module an ``ImportFrom`` reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _module_level(tree: ast.Module):
    """The statements that run at import: module level, and inside module-level ``if``/``try``."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.If, ast.Try)):
            yield from ast.walk(stmt)
        else:
            yield stmt


def _violations() -> dict[str, str]:
    """Every violation: what it is (the key :data:`KNOWN` uses) → the message, with its size."""
    found: dict[str, str] = {}
    graph: dict[str, set[str]] = {}
    for module, (path, is_pkg) in MODULES.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        n_lines = len(text.splitlines())
        if n_lines > MAX_FILE_LINES and _rel(path) not in DATA_TABLES:
            found[f"file {_rel(path)}"] = f"file {_rel(path)} has {n_lines} lines"
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = node.end_lineno - node.lineno + 1
                if span > MAX_FUNCTION_LINES:
                    key = f"function {_rel(path)}:{node.name}"
                    found[key] = f"{key} has {span} lines"
            if isinstance(node, ast.ImportFrom):
                source = _target(module, is_pkg, node)
                if not source.startswith("diffkit"):
                    continue
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and f"{source}.{alias.name}" not in MODULES:
                        key = f"private name {_rel(path)} imports {alias.name} from {source}"
                        found[key] = key
        deps = set()
        for node in _module_level(tree):
            if isinstance(node, ast.ImportFrom):
                source = _target(module, is_pkg, node)
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    deps.add(sub if sub in MODULES else source)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[module] = {d for d in deps if d in MODULES and d != module}
    for cycle in _cycles(graph):
        key = "import cycle " + " -> ".join(cycle)
        found[key] = key
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_house_keeps_its_shape():
    found = _violations()
    new = sorted(found[k] for k in set(found) - KNOWN)
    fixed = sorted(KNOWN - set(found))
    assert not new, "new violations of the house rules (see this file's docstring):\n" + "\n".join(new)
    assert not fixed, "these KNOWN violations are gone; remove them from KNOWN:\n" + "\n".join(fixed)


def test_data_tables_are_still_long():
    for rel, why in DATA_TABLES.items():
        assert why, rel
        n = len((REPO / rel).read_text(encoding="utf-8").splitlines())
        assert n > MAX_FILE_LINES, f"{rel} has {n} lines: remove it from DATA_TABLES"


def test_the_checks_see_what_they_should():
    """The scanner itself: a cycle, a private import and a long function are found."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    tree = ast.parse("from .m import _x, y\nfrom . import _sub\n")
    nodes = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert _target("diffkit.audit.spec", False, nodes[0]) == "diffkit.audit.m"
    assert _target("diffkit.audit", True, nodes[1]) == "diffkit.audit"
    assert "diffkit.audit.spec" in MODULES and "diffkit" in MODULES
