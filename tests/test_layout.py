"""The package's layout, read from its source with ``ast`` (nothing is imported):

- no import circles between its modules, counting imports at module top AND inside functions
  (an import inside a function still ties the two modules; only ``if TYPE_CHECKING:`` imports,
  which never run, are left out);
- imports at module top, except the heavy libraries (torch, sam2, cv2, label_studio_sdk, and
  gunicorn for ``serve``), which load lazily, and ``__main__``, which picks a side per command;
- the sides stack: a subpackage imports only the core and the sides below it (``LAYERS``);
- no module over 400 lines, and no function over 60 lines except those in ``LONG_FUNCTIONS``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ml_backend"

#: Libraries imported inside functions, so that importing a module stays cheap.
LAZY = {"torch", "sam2", "cv2", "label_studio_sdk", "gunicorn"}

#: Modules that may import inside functions: the command line loads one side per command.
LAZY_MODULES = {"ml_backend", "ml_backend.__main__"}

#: Sides from the bottom up: each may import the core (top-level modules) and the sides before it.
LAYERS = ["exporters", "video", "labelstudio", "worker", "server"]

#: Imports from the core up into a side, each with why.
CORE_REACHES = {
    ("ml_backend.settings", "ml_backend.exporters.registry"): "EXPORTS is checked against the formats' names",
}

#: Functions allowed over 60 lines, with why.
LONG_FUNCTIONS = {
    # The model's side of one video: SAM 2's propagation loop with its device-side thresholding,
    # the asynchronous copy to the CPU, the export thread's hand-off and the stop checks. Its steps
    # share a dozen locals per frame; split, they would pass them all back and forth.
    "ml_backend.video.pipeline.propagate_video",
}

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _in_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return True
    return False


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, ast.AST, bool]]:
    """``(imported module, node, inside a function)`` for each import in ``path``; a name taken
    from a package counts as its module when it is one (``from ml_backend.worker import jobs``)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or _type_checking(node, parents):
            continue
        inside = _in_function(node, parents)
        if isinstance(node, ast.Import):
            out.extend((alias.name, node, inside) for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            out.append((sub if sub in known else base, node, inside))
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {
        name: {target for target, _, _ in imports(name, path, known) if target in known and target != name}
        for name, path in mods.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def side(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def test_no_import_circles():
    edges = graph()
    edges.pop("ml_backend", None)  # the package face only re-exports the core (create_app is lazy)
    assert cycles(edges) == []


def test_the_circle_finder_finds_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_at_module_top():
    mods = modules()
    known = set(mods)
    late = []
    for name, path in mods.items():
        if name in LAZY_MODULES:
            continue
        for target, node, inside in imports(name, path, known):
            if inside and target.split(".")[0] not in LAZY and not target.startswith("flask"):
                late.append(f"{name}:{node.lineno} {target}")
    assert late == []


def test_sides_stack():
    upward = []
    for name, targets in graph().items():
        mine = side(name)
        for target in targets:
            theirs = side(target)
            if theirs is None:
                continue
            if (
                mine is None
                and name not in LAZY_MODULES
                and name != "ml_backend.cli"
                and (name, target) not in CORE_REACHES
            ):
                upward.append(f"core {name} -> {target}")
            elif mine is not None and LAYERS.index(theirs) > LAYERS.index(mine):
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_the_worker_never_reaches_flask_or_the_server():
    """Everything a worker process imports (module top and functions alike) stays off the server."""
    mods = modules()
    known = set(mods)
    seen: set[str] = set()
    todo = ["ml_backend.worker.runner", "ml_backend.worker.jobs", "ml_backend.cli"]
    while todo:
        name = todo.pop()
        if name in seen or name not in mods:
            continue
        seen.add(name)
        todo.extend(target for target, _, _ in imports(name, mods[name], known))
    assert not [m for m in seen if m.startswith("ml_backend.server")]
    flask = [n for n in seen for t, _, _ in imports(n, mods[n], known) if t.split(".")[0] == "flask"]
    assert flask == []


def test_module_and_function_sizes():
    big, long = [], []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            big.append(f"{name}: {len(text.splitlines())} lines")
        tree = ast.parse(text)

        def walk(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    qual = f"{prefix}.{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        size = child.end_lineno - child.lineno + 1
                        if size > MAX_FUNCTION_LINES and qual not in LONG_FUNCTIONS:
                            long.append(f"{qual}: {size} lines")
                    walk(child, qual)

        walk(tree, name)
    assert big == []
    assert long == []


def test_every_module_says_what_it_owns():
    silent = [name for name, path in modules().items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert silent == []


def _reference_resolves(ref: str, module: str, known: set[str]) -> bool:
    """``ref`` (a Sphinx target as written, without ``~``) names a module of the package, or
    something inside one: absolute (``ml_backend.video.frames.open_frames``) or relative to the
    module's own side (``.segmenter``)."""
    if ref.startswith("."):
        side = module.rsplit(".", 1)[0]
        ref = f"{side}{ref}"
    elif not ref.startswith("ml_backend"):
        return True  # a name in the module itself or another library: not checked here
    parts = ref.split(".")
    return any(".".join(parts[:i]) in known for i in range(len(parts), max(len(parts) - 3, 0), -1))


def test_docstring_references_name_modules_that_exist():
    """After a move, ``:mod:`` / ``:func:`` references to the old places must follow."""
    import re

    known = set(modules())
    stale = [
        (name, match.group(1))
        for name, path in modules().items()
        for match in re.finditer(r":(?:mod|func|class|meth|data|attr):`~?([\w.]+)`", path.read_text())
        if not _reference_resolves(match.group(1), name, known)
    ]
    assert stale == []


def test_the_reference_check_sees_a_stale_one():
    known = {"ml_backend.worker.gate", "ml_backend.server.sessions"}
    assert _reference_resolves("ml_backend.worker.gate.PublishGate", "ml_backend.worker.x", known)
    assert _reference_resolves(".sessions", "ml_backend.server.interactive", known)
    assert not _reference_resolves("ml_backend.jobs.PublishGate", "ml_backend.worker.x", known)
    assert not _reference_resolves(".signs", "ml_backend.server.interactive", known)
