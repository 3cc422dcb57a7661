"""The architecture holds: dependencies point one way (``cli`` -> ``output`` -> ``core``), no two
files import each other (directly or around a loop, module-level or inside functions), and every
third-party package the code imports is declared in ``pyproject.toml``."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "biotrove_cli"

#: import name -> distribution, for packages that may not be installed where the test runs
KNOWN_DISTRIBUTIONS = {
    "yaml": "pyyaml",
    "PIL": "pillow",
    "open_clip": "open_clip_torch",
    "open_clip_train": "open_clip_torch",
    "ray": "ray",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "huggingface_hub": "huggingface_hub",
    "tensorboard": "tensorboard",
    "matplotlib": "matplotlib",
    "pandas": "pandas",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(
    path: Path, modules: dict[str, Path], this: str | None = None
) -> list[tuple[str, int]]:
    """Every module name ``path`` imports (module level and inside functions), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    this = this or _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                out.append((sub if sub in modules else mod, node.lineno))
    return out


def _internal_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _ in _imports(path, modules):
            # importing a.b.c means a.b.c itself; its packages' __init__ files are trivial
            if target in modules and target != name and not modules[target].name == "__init__.py":
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_files():
    cycles = _cycles(_internal_graph())
    assert not cycles, "import cycles (break them by moving the shared piece down):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_core_never_imports_the_cli_or_output_layers():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        if not name.startswith("biotrove_cli.core"):
            continue
        for target, line in _imports(path, modules):
            top = target.split(".")[0]
            if target.startswith(("biotrove_cli.cli", "biotrove_cli.output")) or top in (
                "typer",
                "rich",
                "click",
            ):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not bad, "core must stay plain Python + torch:\n" + "\n".join(bad)


def test_output_never_imports_the_cli():
    modules = _modules()
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {target}"
        for name, path in modules.items()
        if name.startswith("biotrove_cli.output")
        for target, line in _imports(path, modules)
        if target.startswith("biotrove_cli.cli") or target.split(".")[0] == "typer"
    ]
    assert not bad, "\n".join(bad)


def test_commands_never_import_the_root_app():
    modules = _modules()
    bad = [
        f"{path.relative_to(REPO)}:{line}"
        for name, path in modules.items()
        if name.startswith("biotrove_cli.cli.") and name != "biotrove_cli.cli.app"
        for target, line in _imports(path, modules)
        if target == "biotrove_cli.cli.app"
    ]
    assert not bad, "the root app registers the commands; they never import it:\n" + "\n".join(bad)


def _declared() -> set[str]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return {_normalise(re.split(r"[\s<>=!~;\[(]", s, maxsplit=1)[0]) for s in specs}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_declared():
    modules = _modules()
    installed = metadata.packages_distributions()
    declared = _declared()
    stdlib = set(sys.stdlib_module_names)
    missing = []
    for _name, path in modules.items():
        for target, line in _imports(path, modules):
            top = target.split(".")[0]
            if not top or top in stdlib or top == "biotrove_cli" or top.startswith("_"):
                continue
            dists = {_normalise(d) for d in installed.get(top, [])}
            if top in KNOWN_DISTRIBUTIONS:
                dists.add(_normalise(KNOWN_DISTRIBUTIONS[top]))
            if not dists:
                dists = {_normalise(top)}
            if not dists & declared:
                missing.append(f"{path.relative_to(REPO)}:{line} imports {top}")
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(
        sorted(set(missing))
    )


def test_the_checker_sees_function_level_imports(tmp_path):
    # the checker must not be blind to imports inside functions (where the cycles hide)
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from biotrove_cli.core import errors\n")
    modules = {"biotrove_cli.core.errors": PACKAGE / "core" / "errors.py"}
    assert ("biotrove_cli.core.errors", 2) in _imports(src, modules, "biotrove_cli.core.m")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
