"""The package's shape: no import circles (annotation-only imports included), a settings schema
and a plug-in catalog that load neither the plug-ins nor TensorFlow, no function-local imports
of package modules, small modules, and plug-ins that carry their own configuration."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "deep_representation_one_class"
NAME = PACKAGE.name
# Modules allowed above the size budget, with the reason stated in their docstrings.
LARGE_OK = {f"{NAME}.config"}  # every field with its flag help text and check (docstring)
MAX_LINES = 450


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Package modules an import statement loads (a submodule, else the package itself)."""
    out = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        assert not node.level, f"{module}: relative import (the package imports absolutely)"
        base = node.module or ""
        names = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            names.append(sub if sub in MODULES else base)
    for name in names:
        if name == NAME or name.startswith(NAME + "."):
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            out.append(name)
    return out


def _imports(module: str, type_checking: bool = False) -> tuple[set[str], list[tuple[int, str]]]:
    """(module-level package imports, function-local package imports as (line, target)).

    With ``type_checking`` the imports under ``if TYPE_CHECKING:`` count as module-level ones:
    they never run, but a circle through them still means that two modules each need the
    other to be understood (the old config <-> methods/tasks circle ran through them)."""
    tree = ast.parse(MODULES[module].read_text())
    top: set[str] = set()
    local: list[tuple[int, str]] = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not type_checking:
                continue  # annotations only: never executed
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, child):
                    if in_function:
                        local.append((child.lineno, target))
                    else:
                        top.add(target)
            inner = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            visit(child, inner)

    visit(tree, False)
    top.discard(module)
    return top, local


@pytest.mark.parametrize("type_checking", [False, True], ids=["runtime", "with_type_checking"])
def test_no_import_circles(type_checking):
    graph = {m: _imports(m, type_checking)[0] for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = [*stack[stack.index(n) :], n]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            dfs(m)


def test_the_circle_check_finds_a_circle_through_type_checking(tmp_path, monkeypatch):
    # The check above must see annotation-only imports: a two-module circle through one.
    (tmp_path / "a.py").write_text(f"from {NAME} import b\n")
    (tmp_path / "b.py").write_text(
        f"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from {NAME} import a\n"
    )
    monkeypatch.setitem(MODULES, f"{NAME}.a", tmp_path / "a.py")
    monkeypatch.setitem(MODULES, f"{NAME}.b", tmp_path / "b.py")
    assert _imports(f"{NAME}.b", type_checking=False)[0] == set()
    assert _imports(f"{NAME}.b", type_checking=True)[0] == {f"{NAME}.a"}


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_the_settings_schema_loads_no_plug_ins_and_no_tensorflow():
    loaded = _modules_loaded_by(f"import {NAME}.config; {NAME}.config.Config()")
    assert "tensorflow" not in loaded
    assert "keras" not in loaded
    ours = {m for m in loaded if m.startswith(NAME + ".")}
    catalog = {f"{NAME}.catalog", f"{NAME}.utils", f"{NAME}.utils.literals"}
    assert ours == {f"{NAME}.config", f"{NAME}.errors", *catalog}, ours


def test_config_imports_nothing_of_the_package_but_errors_and_the_catalog():
    assert _imports(f"{NAME}.config", type_checking=True)[0] == {
        f"{NAME}.errors",
        f"{NAME}.catalog",
    }
    assert _imports(f"{NAME}.catalog", type_checking=True)[0] == {
        f"{NAME}.errors",
        f"{NAME}.utils.literals",
    }
    assert _imports(f"{NAME}.utils.literals", type_checking=True)[0] == set()


def test_no_function_local_imports_of_package_modules():
    found = [
        f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {target}"
        for m in sorted(MODULES)
        for line, target in _imports(m)[1]
    ]
    assert not found, "\n".join(found)


def test_modules_stay_small():
    big = {
        m: n
        for m, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES and m not in LARGE_OK
    }
    assert not big, big


def test_top_level_holds_only_the_config_registry_and_commands():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == [
        "__init__",
        "aggregate",
        "bench",
        "catalog",
        "cli",
        "config",
        "droc",
        "errors",
        "evaluate",
        "explain",
        "export",
        "main",
        "registry",
        "report",
        "resolve",
        "score",
        "train",
    ]


def test_every_method_and_dataset_carries_its_defaults():
    from deep_representation_one_class import config as config_lib
    from deep_representation_one_class import datasets, methods, resolve, tasks

    fields = {f.name for f in config_lib.flag_fields()}
    for name in methods.METHODS.names():
        method = methods.METHODS.get(name)
        assert method.defaults.get("aug_list"), name  # no silent fall-back to another method's
        assert set(method.defaults) <= fields, name
    options = set(resolve.option_owners())
    for name in datasets.DATASETS.names():
        spec = datasets.DATASETS.get(name)
        assert spec.task in tasks.TASKS, name
        assert set(spec.defaults) <= fields | options, name
