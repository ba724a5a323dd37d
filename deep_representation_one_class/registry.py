"""A tiny name -> object registry (methods, datasets, tasks, networks, ops, scorers).

Keys are lowercase snake_case; aliases (e.g. the reference's ``unsupembed``) are
declared once, with the object. Lookups are case-insensitive so that reference
spellings such as ``ResNet18`` or ``UnsupEmbed`` keep working.

A registry of a catalog ``kind`` (methods, datasets, tasks, scorers) is filled lazily: its
names are the catalog's (``catalog.py``, read without importing any plug-in), and ``get``
imports an entry's implementation the first time it is looked up. ``Option`` (the declaration
of a plug-in's own setting) lives in the catalog and is re-exported here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from deep_representation_one_class import catalog
from deep_representation_one_class.catalog import Option

__all__ = ["Option", "Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names (and aliases) to registered objects.

    Args:
      name: what the registry holds, for messages ("method").
      kind: the catalog kind whose entries fill it lazily (None: filled by ``add`` only).
      bind: ``bind(entry, implementation) -> object`` turns a loaded implementation into the
        registered object (a dataset's loader function into its spec); default: as loaded.
      providers: modules that ``add`` further objects when imported (a plug-in that brings a
        backbone of its own); imported the first time a name is missing or all are listed.
    """

    def __init__(
        self,
        name: str,
        kind: str | None = None,
        bind: Callable[[catalog.Entry, Any], T] | None = None,
        providers: Sequence[str] = (),
    ):
        self.name = name
        self.kind = kind
        self._bind = bind
        self._providers = list(providers)
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def _load_providers(self) -> bool:
        loaded, self._providers = self._providers, []
        for module in loaded:
            importlib.import_module(module)
        return bool(loaded)

    def register(self, key: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering an object under ``key`` and optional ``aliases``."""

        def deco(obj: T) -> T:
            self.add(key, obj, *aliases)
            return obj

        return deco

    def _entry(self, low: str) -> catalog.Entry | None:
        return None if self.kind is None else catalog.find(self.kind, low)

    def add(self, key: str, obj: T, *aliases: str) -> None:
        """Registers ``obj`` directly (non-decorator form)."""
        for name in (key, *aliases):
            low = name.lower()
            if low in self._items or low in self._aliases or self._entry(low) is not None:
                raise KeyError(f"{self.name}: '{name}' is already registered")
        self._items[key.lower()] = obj
        for alias in aliases:
            self._aliases[alias.lower()] = key.lower()

    def canonical(self, key: str) -> str:
        """Returns the canonical key for ``key`` or an alias; raises KeyError listing valid keys."""
        low = str(key).lower()
        low = self._aliases.get(low, low)
        if low in self._items:
            return low
        entry = self._entry(low)
        if entry is None and self._load_providers():
            return self.canonical(key)
        if entry is None:
            raise KeyError(
                f"unknown {self.name} '{key}'; valid: {', '.join(self.names(with_aliases=True))}"
            )
        return entry.name

    def get(self, key: str) -> T:
        """Returns the object registered under ``key`` (or an alias of it), importing a
        catalog entry's implementation on first use."""
        name = self.canonical(key)
        if name not in self._items:
            entry = self._entry(name)
            obj = catalog.load(entry)
            self._items[name] = self._bind(entry, obj) if self._bind else obj
        return self._items[name]

    def names(self, with_aliases: bool = False) -> list[str]:
        """Canonical names, sorted; with ``with_aliases`` the aliases too."""
        self._load_providers()
        keys = set(self._items)
        if with_aliases:
            keys |= set(self._aliases)
        if self.kind is not None:
            keys |= set(catalog.names(self.kind, with_aliases))
        return sorted(keys)

    def __contains__(self, key: Any) -> bool:
        low = str(key).lower()
        if low in self._items or low in self._aliases or self._entry(low) is not None:
            return True
        return self._load_providers() and key in self
