"""The catalog: every plug-in (method, dataset, task, scorer) described once, read without TF.

A plug-in is one file. Its description is a top-level literal, ``PLUGIN = dict(kind=..., ...)``
(or a list of such dicts when a file implements several), placed before the implementation::

    PLUGIN = dict(
        kind="method", name="toy", label="Toy", defaults={"aug_list": "x,x", ...},
        options=[Option("toy_margin", 0.5, "Margin of the toy loss.")], impl="ToyMethod",
    )

The catalog reads that literal with ``ast`` and never imports the file, so flags, help texts,
config validation, the tables, the report and the sweep scripts learn every plug-in's name,
aliases, label, defaults, options, categories and preprocessing without loading TensorFlow or
any implementation. ``impl`` ("Class", "function" or "module:Class") is imported only when a
registry looks the plug-in up (``registry.Registry.get``).

The literal may use names bound by literal top-level assignments of its own file or imported
from the package's files (``PAPER_AUG``, a shared ``Option``), ``+``, ``*``, subscripts and the
constructors ``dict``, ``tuple``, ``Option`` and ``MappingProxyType``; nothing else is evaluated.

Where plug-ins come from: the package's folders (methods/, datasets/, tasks/,
evaluation/scorers/), then ``DROC_PLUGINS`` (comma-separated module names or ``.py`` paths), then
the ``deep_representation_one_class.plugins`` entry-point group (each value a module).

``python -m deep_representation_one_class.catalog`` lists the plug-ins; ``... categories DATASET``
prints a dataset's table categories (the sweep scripts' ``--categories all``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any

from deep_representation_one_class.errors import UserError
from deep_representation_one_class.utils import literals

__all__ = [
    "KINDS",
    "CatalogError",
    "Entry",
    "Option",
    "default_scorers",
    "entries",
    "entry_for_class",
    "find",
    "load",
    "names",
    "option_owners",
    "scorers_for",
    "summary",
]

KINDS = ("method", "dataset", "task", "scorer")
ENV = "DROC_PLUGINS"
ENTRY_POINT_GROUP = "deep_representation_one_class.plugins"
PACKAGE = literals.PACKAGE
PACKAGE_NAME = literals.PACKAGE_NAME
_FOLDERS = ("methods", "datasets", "tasks", os.path.join("evaluation", "scorers"))


class CatalogError(UserError, ValueError):
    """A plug-in description is malformed or cannot be found; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Option:
    """A setting owned by one plug-in (a method or a task), declared in its description.

    Options become command-line flags (``--name``) and entries of ``Config.options``; in
    ``config.json`` they sit at the top level beside the common settings, as the reference's
    flags did. The flag type follows ``default``: bool, int, float, str, or a tuple (a
    comma-separated list); ``kind`` overrides it (e.g. ``str`` for a path whose default is None).

    Attributes:
      name: the flag name (lowercase snake_case), unique across all plug-ins.
      default: the value when the flag is not given.
      help: the flag's help text: unit, range and meaning.
      kind: the value type when ``default`` does not tell it.
    """

    name: str
    default: Any
    help: str
    kind: type | None = None

    @property
    def type(self) -> type:
        if self.kind is not None:
            return self.kind
        return type(self.default)


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return types.MappingProxyType({k: _tuples(v) for k, v in dict(d or {}).items()})


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


@dataclasses.dataclass(frozen=True)
class Entry:
    """One plug-in's description (the fields a kind does not use keep their defaults).

    Attributes:
      kind: method, dataset, task or scorer.
      name: canonical key (lowercase); ``aliases``: other accepted spellings.
      impl: ``module:attr`` of the implementation (imported by ``load`` only).
      source: the file the description was read from.
      label: the name in result tables (methods: the paper's row; datasets: the column).
      description: one line for help texts.
      defaults: quick defaults of ``Config`` fields (or options) the plug-in implies.
      options: the settings only this plug-in reads (methods, tasks).
      fixed: (methods) settings a dataset's defaults must not override.
      extra_eval: (methods) evaluation feature sets besides pool/embed.
      task, categories, class_names, category_aliases, input_shape, preprocessing, method,
        method_defaults, table_categories: (datasets) the task that runs it; the valid
        categories (None = any folder); their class names; further spellings; the default
        (H, W, C); how one image is prepared beyond the resize (native padding, crops, resample;
        recorded with each run so served images match); the default method; per-method
        defaults; the categories of the paper's table (default: all).
      tasks: (scorers) the tasks it serves; ``default_for``: the default lists it is in
        (``train``: a run's --classifiers; ``export``: the export's; ``patches``: the patch
        task's fallback), a list, or a dict list -> rank where the order matters (lower
        first; ties in catalog order).
      servable, periodic_eval: (tasks) whether Detector/score/export serve its runs, and
        whether --eval_every works.
    """

    kind: str
    name: str
    impl: str
    source: str = ""
    aliases: tuple[str, ...] = ()
    label: str = ""
    description: str = ""
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    options: tuple[Option, ...] = ()
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    extra_eval: tuple[str, ...] = ()
    task: str = "image"
    categories: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | None = None
    category_aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    input_shape: tuple[int, int, int] = (32, 32, 3)
    preprocessing: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    method: str = ""
    method_defaults: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    table_categories: tuple[str, ...] | None = None
    tasks: tuple[str, ...] = ("image", "patches")
    default_for: Mapping[str, int] = dataclasses.field(default_factory=dict)
    servable: bool = True
    periodic_eval: bool = True

    @property
    def table_label(self) -> str:
        return self.label or self.name


_FIELDS = {f.name for f in dataclasses.fields(Entry)} - {"source"}
_BY_KIND = {
    "method": {"defaults", "options", "fixed", "extra_eval"},
    "dataset": {
        "defaults", "task", "categories", "class_names", "category_aliases", "input_shape",
        "preprocessing", "method", "method_defaults", "table_categories",
    },
    "task": {"options", "servable", "periodic_eval"},
    "scorer": {"tasks", "default_for"},
}  # fmt: skip
_COMMON = {"kind", "name", "impl", "aliases", "label", "description"}


def _option(value: Any, where: str) -> Option:
    if isinstance(value, Option):
        return value
    if not isinstance(value, Mapping) or not {"name", "default", "help"} <= set(value):
        raise CatalogError(f"{where}: an option needs name, default and help, got {value!r}")
    kind = value.get("kind")
    if isinstance(kind, str):
        kind = literals.TYPES.get(kind)
    return Option(str(value["name"]), _tuples(value["default"]), str(value["help"]), kind)


def make_entry(raw: Any, module: str, source: str) -> Entry:
    """An ``Entry`` from one description dict (read by ``ast`` or the live module's value)."""
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{source}: PLUGIN must be a dict (or a list of dicts)")
    kind = raw.get("kind")
    where = f"{source}: plug-in '{raw.get('name', '?')}'"
    if kind not in KINDS:
        raise CatalogError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = sorted(set(raw) - _COMMON - _BY_KIND[kind])
    if unknown:
        raise CatalogError(
            f"{where}: unknown keys {unknown} for a {kind}; valid: "
            f"{', '.join(sorted(_COMMON | _BY_KIND[kind]))}"
        )
    if not raw.get("name") or not raw.get("impl"):
        raise CatalogError(f"{where}: a plug-in needs a name and an impl")
    kw: dict[str, Any] = {k: v for k, v in raw.items() if k in _FIELDS}
    impl = str(raw["impl"])
    kw["impl"] = impl if ":" in impl else f"{module}:{impl}"
    kw["name"] = str(raw["name"]).lower()
    kw["aliases"] = tuple(str(a).lower() for a in raw.get("aliases", ()))
    kw["options"] = tuple(_option(o, where) for o in raw.get("options", ()))
    if kind == "dataset" and "categories" not in raw and raw.get("class_names") is not None:
        # Indexed classes: the categories are "0".."n-1" (names are accepted too).
        kw["categories"] = tuple(str(i) for i in range(len(raw["class_names"])))
    for key in ("defaults", "fixed", "preprocessing", "category_aliases"):
        if key in kw:
            kw[key] = _frozen(kw[key])
    if "method_defaults" in kw:
        kw["method_defaults"] = _frozen({m: _frozen(d) for m, d in kw["method_defaults"].items()})
    if "default_for" in kw:
        given = kw["default_for"]
        ranks = given if isinstance(given, Mapping) else dict.fromkeys(given, 0)
        kw["default_for"] = types.MappingProxyType({str(k): int(v) for k, v in ranks.items()})
    for key in ("extra_eval", "categories", "class_names", "input_shape", "table_categories",
                "tasks"):  # fmt: skip
        if kw.get(key) is not None:
            kw[key] = tuple(_tuples(kw[key]))
    return Entry(source=source, **kw)


def read_file(path: str, module: str) -> list[Entry]:
    """The entries a file describes ([] when it has no ``PLUGIN``); nothing is imported."""
    with open(path, encoding="utf-8") as f:
        if "PLUGIN" not in f.read():
            return []
    try:
        raw = literals.top_level_value(os.path.abspath(path), module, "PLUGIN")
    except literals.LiteralError as e:
        raise CatalogError(str(e)) from None
    if raw is literals.ABSENT:
        return []
    raws = raw if isinstance(raw, (list, tuple)) else [raw]
    return [make_entry(r, module, path) for r in raws]


# --- discovery ---------------------------------------------------------------------------


def _builtin_files() -> list[tuple[str, str]]:
    out = []
    for folder in _FOLDERS:
        root = os.path.join(PACKAGE, folder)
        for fname in sorted(os.listdir(root)):
            if fname.endswith(".py") and fname != "__init__.py":
                mod = ".".join([PACKAGE_NAME, *folder.split(os.sep), fname[:-3]])
                out.append((os.path.join(root, fname), mod))
    return out


def path_module_name(path: str) -> str:
    """The module name a plug-in file given by path is imported under."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"droc_plugin_{stem}"


def _user_files(spec: str) -> list[tuple[str, str]]:
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.endswith(".py") or os.sep in item:
            if not os.path.isfile(item):
                raise CatalogError(f"{ENV}: '{item}' is not a file")
            out.append((os.path.abspath(item), path_module_name(item)))
            continue
        found = importlib.util.find_spec(item)
        if found is None or not found.origin or not found.origin.endswith(".py"):
            raise CatalogError(f"{ENV}: no Python module '{item}' on the path")
        out.append((found.origin, item))
    return out


def _entry_point_files() -> list[tuple[str, str]]:
    spec = ",".join(
        ep.value.split(":")[0].strip()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    )
    return _user_files(spec)


@functools.lru_cache(maxsize=8)
def _catalog(env: str) -> tuple[Entry, ...]:
    found: list[Entry] = []
    for path, mod in [*_builtin_files(), *_user_files(env), *_entry_point_files()]:
        found.extend(read_file(path, mod))
    seen: dict[tuple[str, str], Entry] = {}
    for e in found:
        for key in (e.name, *e.aliases):
            other = seen.get((e.kind, key))
            if other is not None:
                raise CatalogError(
                    f"{e.kind} '{key}' is described twice: {other.source} and {e.source}"
                )
            seen[(e.kind, key)] = e
    return tuple(found)


def entries(kind: str | None = None) -> list[Entry]:
    """Every plug-in (of ``kind``), built-ins first, in discovery order."""
    return [e for e in _catalog(os.environ.get(ENV, "")) if kind is None or e.kind == kind]


def find(kind: str, name: Any) -> Entry | None:
    """The entry of ``kind`` named ``name`` or an alias of it (case-insensitive), else None."""
    low = str(name).strip().lower()
    for e in entries(kind):
        if low == e.name or low in e.aliases:
            return e
    return None


def names(kind: str, with_aliases: bool = False) -> list[str]:
    out = [n for e in entries(kind) for n in (e.name, *(e.aliases if with_aliases else ()))]
    return sorted(out)


def load(entry: Entry) -> Any:
    """Imports the entry's implementation (here, and only here, plug-in code runs)."""
    module_name, _, attr = entry.impl.partition(":")
    if module_name in sys.modules:
        module = sys.modules[module_name]
    elif module_name != path_module_name(entry.source):
        module = importlib.import_module(module_name)
    else:  # a plug-in file given by path
        spec = importlib.util.spec_from_file_location(module_name, entry.source)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    try:
        return getattr(module, attr)
    except AttributeError:
        raise CatalogError(f"{entry.source}: impl '{entry.impl}' names nothing there") from None


def entry_for_class(cls: type, kind: str) -> Entry | None:
    """The entry whose ``impl`` is ``cls``, from the live ``PLUGIN`` value of its module (the
    same literal the catalog reads), so a class imported directly carries its description."""
    module = sys.modules.get(cls.__module__)
    raw = getattr(module, "PLUGIN", None)
    for d in raw if isinstance(raw, (list, tuple)) else [raw] if raw else []:
        if isinstance(d, Mapping) and d.get("kind") == kind:
            impl = str(d.get("impl", ""))
            if impl.rpartition(":")[2] == cls.__qualname__:
                return make_entry(d, cls.__module__, getattr(module, "__file__", "") or "")
    return None


# --- what the rest of the package asks -----------------------------------------------------


def option_owners() -> dict[str, tuple[Option, list[str]]]:
    """Every declared option: name -> (its declaration, the plug-ins that own it).

    Raises:
      CatalogError: two plug-ins declare one option with different types or defaults.
    """
    owners: dict[str, tuple[Option, list[str]]] = {}
    for e in [*entries("method"), *entries("task")]:
        who = f"{e.kind} {e.name}"
        for opt in e.options:
            if opt.name in owners:
                known, who_else = owners[opt.name]
                if known.type is not opt.type or known.default != opt.default:
                    raise CatalogError(
                        f"option --{opt.name} is declared differently by {who_else[0]} and {who}"
                    )
                who_else.append(who)
            else:
                owners[opt.name] = (opt, [who])
    return owners


def scorers_for(task: str) -> tuple[str, ...]:
    """The scorers that serve ``task`` (e.g. the patch task's), in catalog order."""
    return tuple(e.name for e in entries("scorer") if task in e.tasks)


def default_scorers(context: str = "train", task: str | None = None) -> tuple[str, ...]:
    """The scorers of a default list (``train``, ``export``, ``patches``), by their rank in it,
    then in catalog order."""
    chosen = [e for e in entries("scorer") if context in e.default_for]
    chosen = [e for e in chosen if task is None or task in e.tasks]
    return tuple(e.name for e in sorted(chosen, key=lambda e: e.default_for[context]))


def summary(kind: str) -> str:
    """One line naming every plug-in of ``kind`` (aliases in brackets), for help texts."""
    parts = []
    for e in sorted(entries(kind), key=lambda e: e.name):
        alias = f" [{', '.join(e.aliases)}]" if e.aliases else ""
        parts.append(f"{e.name}{alias}")
    return ", ".join(parts)


def _details(e: Entry) -> str:
    if e.kind == "dataset":
        cats = "any folder" if e.categories is None else f"{len(e.categories)} categories"
        shape = "x".join(str(v) for v in e.input_shape)
        return f"table column '{e.table_label}', {cats}, {shape}, task {e.task}"
    if e.kind == "scorer":
        return f"tasks {', '.join(e.tasks)}; default for {', '.join(e.default_for) or '-'}"
    opts = ", ".join(f"--{o.name}" for o in e.options) or "no options"
    return f"table row '{e.table_label}', {opts}" if e.kind == "method" else opts


def _main(argv: Sequence[str]) -> int:
    if argv[:1] == ["categories"] and len(argv) == 2:
        e = find("dataset", argv[1])
        cats = None if e is None else (e.table_categories or e.categories)
        if cats is None:
            print(f"error: no category list for dataset '{argv[1]}'", file=sys.stderr)
            return 1
        print(" ".join(cats))
        return 0
    if argv:
        print("usage: python -m deep_representation_one_class.catalog [categories DATASET]")
        return 2
    for kind in KINDS:
        print(f"{kind}s:")
        for e in entries(kind):
            print(f"  {e.name}{' [' + ', '.join(e.aliases) + ']' if e.aliases else ''}: "
                  f"{e.description or e.table_label}")  # fmt: skip
            print(f"      {_details(e)}; {e.impl}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except CatalogError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
