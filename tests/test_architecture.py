"""The structure the project promises: no package import cycles, no library module importing a CLI, and the
backend table as the single place a runtime is registered."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "rexnet_deploy"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at any depth in the file (function-level imports count)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rexnet_deploy")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("rexnet_deploy"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}
    return found


def _node(module: str) -> str | None:
    """The graph node of a module: its sub-package (``rexnet_deploy.bench``) or top-level module (``…errors``)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    node = ".".join(parts[:2])
    if (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file():
        return node
    return None


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = _node(_module_name(path))
        if source is None:
            continue
        graph.setdefault(source, set())
        for target in map(_node, _imports(path)):
            if target and target != source:
                graph[source].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_package_import_graph_has_no_cycles():
    graph = package_graph()
    assert {"rexnet_deploy.backends", "rexnet_deploy.bundle", "rexnet_deploy.onnx_io"} <= set(graph)
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


# ARCHITECTURE.md's layer table, top row first: a package imports from its own row and the rows above only
LAYERS = [
    {"errors", "hardware", "artifacts", "onnx_io", "report", "cli_args", "preprocess", "stages", "lazy"},
    {"models"},
    {"data"},
    {"backends"},
    {"train", "prune"},
    {"export", "quant"},
    {"bench"},
    {"bundle"},
    {"pipeline", "predict", "experiments"},
    {"cli", "__main__"},
]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a lower row's package (``a → b``: a is above b in LAYERS), and every unplaced package."""
    row = {name: i for i, names in enumerate(LAYERS) for name in names}
    short = {node: node.split(".", 1)[1] for node in graph}
    found = [f"{short[node]} is in no row of LAYERS" for node in graph if short[node] not in row]
    found += [f"{short[a]} (row {row[short[a]]}) imports {short[b]} (row {row[short[b]]})"
              for a in graph for b in graph[a]
              if short[a] in row and b in short and short[b] in row and row[short[b]] > row[short[a]]]
    return sorted(found)


def test_the_layer_check_catches_a_lower_layer_import():
    assert layer_violations({"rexnet_deploy.data": {"rexnet_deploy.bench"}, "rexnet_deploy.bench": set()}) == [
        "data (row 2) imports bench (row 6)"]


def test_packages_import_only_their_own_layer_and_the_layers_above():
    assert not layer_violations(package_graph())


def test_functions_a_reader_can_follow():
    """No function over 60 lines or 8 parameters (self/cls not counted) in the stage packages: a request object
    carries what a function would otherwise forward."""
    offenders = []
    for package in ("bundle", "quant", "prune", "data"):
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                a = node.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
                count = len([p for p in params if p.arg not in ("self", "cls")])
                length = node.end_lineno - node.lineno + 1
                if length > 60 or count > 8:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines, "
                                     f"{count} parameters")
    assert not offenders, offenders


def test_onnx_io_is_a_leaf():
    imported = {m.split(".")[0] for m in ast.walk(ast.parse((PACKAGE / "onnx_io.py").read_text()))
                for m in ([a.name for a in m.names] if isinstance(m, ast.Import) else
                          [m.module or ""] if isinstance(m, ast.ImportFrom) else [])}
    assert imported <= {"__future__", "json", "pathlib", "typing", "numpy", "onnx"}, imported


def test_no_library_module_imports_a_cli_module():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path in (PACKAGE / "cli.py", PACKAGE / "__main__.py"):  # the entry points
            continue
        cli_imports = {m for m in _imports(path) if m.split(".")[-1] == "cli" or m == "rexnet_deploy.cli"}
        # a stage's command module may import its siblings' library code, never another command module
        if cli_imports - ({_module_name(path)} if path.name == "cli.py" else set()):
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(cli_imports)}")
    assert not offenders, offenders


def test_backend_names_live_in_the_table_and_their_modules():
    """Outside ``backends/`` (and the command modules' help texts) no code spells a backend's name."""
    from rexnet_deploy.backends import BACKENDS

    names = {b.name for b in BACKENDS.values()} - {"torch"}  # "torch" is also the library every stage imports
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "backends":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offenders, offenders



def runtime_imports(imports: dict[str, set[str]], runtime_modules: set[str]) -> list[str]:
    """Every import of a runtime module (one a table row names) by another module: ``imports`` maps a module to
    the project modules it imports."""
    return [f"{module} imports {other}" for module, found in sorted(imports.items())
            for other in sorted((found & runtime_modules) - {module})]


def test_the_runtime_import_check_catches_a_sibling_import():
    runtime = {"b.one", "b.two"}
    assert runtime_imports({"b.one": {"b.two", "b.base"}, "b.two": {"b.common"}}, runtime) == ["b.one imports b.two"]


def test_runtime_modules_import_base_and_common_never_each_other():
    """What two runtimes share lives in ``backends/common.py`` (chunking, caches, batch defaults, ONNX Runtime's
    CPU Q/DQ layout), so each module of ``backends/`` stands alone; only the table (``__init__``) and what reads any
    artifact through it (``record``) reach every runtime."""
    from rexnet_deploy.backends import BACKENDS

    runtime = {b.module for b in BACKENDS.values()}
    assert {"rexnet_deploy.backends.tensorrt", "rexnet_deploy.backends.onnxruntime"} <= runtime
    imports = {_module_name(path): _imports(path) for path in (PACKAGE / "backends").glob("*.py")
               if path.name not in ("__init__.py", "record.py")}
    assert "rexnet_deploy.backends.common" in imports
    assert not runtime_imports(imports, runtime)


def test_no_lazy_export_is_named_like_a_module_of_its_package():
    """A package attribute named like one of its modules is replaced by that module once anything imports it
    (``from rexnet_deploy.train import fit`` gave the module ``train/fit.py`` after a test had imported it)."""
    import importlib

    clashes = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        package = importlib.import_module(_module_name(init))
        if "__getattr__" not in vars(package):
            continue  # names imported eagerly by the __init__ are bound after their module: no clash
        modules = {p.stem for p in init.parent.glob("*.py")} | {p.name for p in init.parent.iterdir() if p.is_dir()}
        clashes += [f"{package.__name__}.{name}" for name in getattr(package, "__all__", []) if name in modules]
    assert not clashes
