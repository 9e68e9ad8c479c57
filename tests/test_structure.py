"""The house rules of the code, checked: no import cycles, small modules and
functions (or a reason stated), and a runtime that imports neither torch nor
the host package (it must install on a board with numpy alone)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"edgecompress": ROOT / "edgecompress", "edgecompress_runtime": ROOT / "runtime" / "edgecompress_runtime"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# A module may be longer when its docstring says why, with this phrase.
LONG_REASON = "Why this module is long:"
# A function may be longer when it is a flat table of data: say so on its def line.
LONG_FUNCTION_MARK = "# flat table"
# ExecuTorch's Python runtime needs libtorch loaded: its backend imports torch, lazily, when that backend is chosen.
TORCH_ALLOWED = {"edgecompress_runtime.backends.executorch"}


def _modules():
    for pkg, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = [pkg, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _imports(name: str, path: Path, tree: ast.Module, top_level_only: bool) -> set[str]:
    """Modules of our packages that ``name`` imports (at module level when
    ``top_level_only``: imports inside functions are how a cycle is broken on purpose)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports never run
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.update(f"{mod}.{a.name}" for a in node.names)
            if not node.level or node.module:   # `from . import x` imports the submodule x, not its package
                found.add(mod)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph(top_level_only: bool = True) -> dict[str, set[str]]:
    mods = dict(_modules())
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        deps = set()
        for m in _imports(name, path, tree, top_level_only):
            while m and m not in mods:  # `from pkg import name` names an attribute, not a module
                m = m.rpartition(".")[0]
            if m and m != name:
                deps.add(m)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    # Tarjan's strongly connected components; any component of 2+ modules is a cycle.
    index, low, stack, on, out = {}, {}, [], set(), []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _parent_packages_removed(graph):
    # Importing a submodule runs its packages' __init__ first: that implicit edge to a parent is no import
    # of ours. A package's __init__ importing its own submodules is a real edge, and kept.
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycles():
    cycles = _cycles(_parent_packages_removed(_graph()))
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_runtime_imports_neither_torch_nor_the_host():
    bad = []
    for name, path in _modules():
        if not name.startswith("edgecompress_runtime"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            banned = ("edgecompress",) if name in TORCH_ALLOWED else ("torch", "edgecompress")
            bad += [f"{name}: {n}" for n in names if n.split(".")[0] in banned]
    assert bad == []


def test_runtime_loads_without_torch_in_a_fresh_interpreter(tmp_path):
    import subprocess
    code = ("import sys, edgecompress_runtime, edgecompress_runtime.cli, edgecompress_runtime.bench\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'edgecompress'))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_modules_are_small_or_say_why():
    long = []
    for name, path in _modules():
        text = path.read_text()
        n = text.count("\n")
        if n > MAX_MODULE_LINES and LONG_REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{name} ({n} lines)")
    assert long == [], f"modules over {MAX_MODULE_LINES} lines without '{LONG_REASON}' in the docstring: {long}"


def test_functions_are_short_or_flat_tables():
    long = []
    for name, path in _modules():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                doc = node.body[0] if node.body and isinstance(node.body[0], ast.Expr) and \
                    isinstance(getattr(node.body[0], "value", None), ast.Constant) and \
                    isinstance(node.body[0].value.value, str) else None
                if doc is not None:  # the docstring is not code
                    size -= doc.end_lineno - doc.lineno + 1
                if size > MAX_FUNCTION_LINES and LONG_FUNCTION_MARK not in lines[node.lineno - 1]:
                    long.append(f"{name}.{node.name} ({size} lines)")
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("stage", ["graph", "passes", "plan", "export", "deploy", "calibrate", "report", "cli",
                                   "farm"])
def test_each_stage_has_its_folder(stage):
    assert (PACKAGES["edgecompress"] / stage / "__init__.py").is_file()
