"""Reads a top-level literal of a Python file without running the file (the plug-in catalog).

``top_level_value(path, module, "PLUGIN")`` parses the file with ``ast`` and evaluates the value
bound to the name: constants, tuples, lists, dicts, ``+``, ``*``, unary minus, subscripts, the
constructors ``dict``, ``tuple``, ``MappingProxyType`` and ``Option`` (as a dict of its
arguments), and names bound by literal top-level assignments of the same file or imported from
the package's own files (which are parsed the same way). Nothing else is evaluated and nothing is
imported, so reading a plug-in's description loads neither it nor TensorFlow. Standard library
only.
"""

from __future__ import annotations

import ast
import functools
import os
from typing import Any

__all__ = ["ABSENT", "PACKAGE", "PACKAGE_NAME", "TYPES", "LiteralError", "top_level_value"]

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_NAME = "deep_representation_one_class"
TYPES = {"str": str, "int": int, "float": float, "bool": bool, "tuple": tuple}
ABSENT = object()


class LiteralError(ValueError):
    """The value is not a literal this reader evaluates; the message names file and line."""


# --- reading descriptions without importing ----------------------------------------------


class _Parsed:
    """One source file: its top-level literal assignments and imports, evaluated on demand."""

    def __init__(self, path: str, module: str):
        self.path, self.module = path, module
        with open(path, encoding="utf-8") as f:
            self.tree = ast.parse(f.read(), filename=path)
        self.assigned: dict[str, ast.expr] = {}
        self.imported: dict[str, tuple[str, str | None]] = {}
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                if isinstance(node.targets[0], ast.Name):
                    self.assigned[node.targets[0].id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if node.value is not None:
                    self.assigned[node.target.id] = node.value
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.imported[a.asname or a.name] = (node.module, a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    self.imported[a.asname or a.name.split(".")[0]] = (a.name, None)
        self._values: dict[str, Any] = {}

    def value(self, name: str, node: ast.AST) -> Any:
        if name in self._values:
            return self._values[name]
        if name in self.assigned:
            self._values[name] = self.eval(self.assigned[name])
        elif name in self.imported:
            module, attr = self.imported[name]
            if attr is None:
                raise self.error(node, f"'{name}' is a module, not a value")
            sub = f"{module}.{attr}"
            if _package_file(sub) is not None:
                raise self.error(node, f"'{name}' is a module, not a value")
            self._values[name] = _parsed_module(module, node, self).value(attr, node)
        elif name in TYPES:
            return TYPES[name]
        else:
            raise self.error(node, f"'{name}' is not a literal of this file or the package")
        return self._values[name]

    def error(self, node: ast.AST, msg: str) -> LiteralError:
        return LiteralError(f"{self.path}:{getattr(node, 'lineno', '?')}: PLUGIN: {msg}")

    def eval(self, node: ast.AST) -> Any:
        ev = self.eval
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List)):
            out: list[Any] = []
            for elt in node.elts:
                out.extend(ev(elt.value)) if isinstance(elt, ast.Starred) else out.append(ev(elt))
            return tuple(out) if isinstance(node, ast.Tuple) else out
        if isinstance(node, ast.Dict):
            d: dict[Any, Any] = {}
            for k, v in zip(node.keys, node.values):
                d.update(ev(v)) if k is None else d.__setitem__(ev(k), ev(v))
            return d
        if isinstance(node, ast.Name):
            return self.value(node.id, node)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = self.imported.get(node.value.id)
            if module is not None:
                full = module[0] if module[1] is None else f"{module[0]}.{module[1]}"
                return _parsed_module(full, node, self).value(node.attr, node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        if isinstance(node, ast.Subscript):
            return ev(node.value)[ev(node.slice)]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [ev(a) for a in node.args]
            kw = {k.arg: ev(k.value) for k in node.keywords if k.arg}
            if node.func.id == "dict":
                return dict(*args, **kw)
            if node.func.id in ("MappingProxyType", "tuple"):
                return dict(args[0]) if node.func.id == "MappingProxyType" else tuple(args[0])
            if node.func.id == "Option":
                return dict(zip(("name", "default", "help", "kind"), args), **kw)
        raise self.error(node, f"cannot read {type(node).__name__} without running code")


def _package_file(module: str) -> str | None:
    """The file of a package module, found without importing anything."""
    if module != PACKAGE_NAME and not module.startswith(PACKAGE_NAME + "."):
        return None
    rel = os.path.join(PACKAGE, *module.split(".")[1:])
    for path in (rel + ".py", os.path.join(rel, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


@functools.cache
def _parsed(path: str, module: str, stamp: tuple[int, int]) -> _Parsed:
    del stamp  # part of the cache key: an edited file is parsed again
    return _Parsed(path, module)


def _parsed_module(module: str, node: ast.AST, by: _Parsed) -> _Parsed:
    path = _package_file(module)
    if path is None:
        raise by.error(node, f"names from '{module}' cannot be read (only the package's files)")
    return _parsed(path, module, _stamp(path))


def _stamp(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


def top_level_value(path: str, module: str, name: str) -> Any:
    """The value bound to ``name`` at the top level of ``path`` (``ABSENT`` if unbound).

    Args:
      path: the file.
      module: its module name (for messages and relative names).
      name: the top-level name, e.g. ``"PLUGIN"``.

    Raises:
      LiteralError: the value uses something other than literals (file:line in the message).
    """
    parsed = _parsed(path, module, _stamp(path))
    if name not in parsed.assigned:
        return ABSENT
    return parsed.value(name, parsed.tree)
