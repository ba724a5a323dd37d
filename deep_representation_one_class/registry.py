"""A tiny name -> object registry (methods, datasets, tasks, networks, ops, scorers) and the
``Option`` declaration that registrations use to carry their own settings.

Keys are lowercase snake_case; aliases (e.g. the reference's ``unsupembed``) are
declared once, at registration. Lookups are case-insensitive so that reference
spellings such as ``ResNet18`` or ``UnsupEmbed`` keep working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names (and aliases) to registered objects."""

    def __init__(self, name: str):
        self.name = name
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, key: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering an object under ``key`` and optional ``aliases``."""

        def deco(obj: T) -> T:
            self.add(key, obj, *aliases)
            return obj

        return deco

    def add(self, key: str, obj: T, *aliases: str) -> None:
        """Registers ``obj`` directly (non-decorator form)."""
        for name in (key, *aliases):
            low = name.lower()
            if low in self._items or low in self._aliases:
                raise KeyError(f"{self.name}: '{name}' is already registered")
        self._items[key.lower()] = obj
        for alias in aliases:
            self._aliases[alias.lower()] = key.lower()

    def canonical(self, key: str) -> str:
        """Returns the canonical key for ``key`` or an alias; raises KeyError listing valid keys."""
        low = str(key).lower()
        low = self._aliases.get(low, low)
        if low not in self._items:
            raise KeyError(
                f"unknown {self.name} '{key}'; valid: {', '.join(self.names(with_aliases=True))}"
            )
        return low

    def get(self, key: str) -> T:
        """Returns the object registered under ``key`` (or an alias of it)."""
        return self._items[self.canonical(key)]

    def names(self, with_aliases: bool = False) -> list[str]:
        """Canonical names, sorted; with ``with_aliases`` the aliases too."""
        keys = list(self._items)
        if with_aliases:
            keys += list(self._aliases)
        return sorted(keys)

    def __contains__(self, key: Any) -> bool:
        low = str(key).lower()
        return low in self._items or low in self._aliases


@dataclasses.dataclass(frozen=True)
class Option:
    """A setting owned by one registration (a method or a task), declared next to it.

    Options become command-line flags (``--name``) and entries of ``Config.options``; in
    ``config.json`` they sit at the top level beside the common settings, as the reference's
    flags did. The flag type follows ``default``: bool, int, float, str, or a tuple (a
    comma-separated list); ``kind`` overrides it (e.g. ``str`` for a path whose default is None).

    Attributes:
      name: the flag name (lowercase snake_case), unique across all registrations.
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
