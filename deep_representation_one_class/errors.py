"""The package's error types, in one dependency-free module.

Every error that a user can cause with a flag, a file or a folder derives from ``UserError``:
the command lines print its message as one ``error: ...`` line and exit with status 2
(``cli.guard``). Anything else is a bug or an environment failure (exit status 1). Keeping the
types here, with no imports, lets any module raise them without importing the module that
happens to use them most (the old ``config`` <-> registries import circle).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input (flag, file, folder, request); the message names it and says what to do."""


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message says which flag and what is valid."""


class RunError(UserError, RuntimeError):
    """A run cannot proceed (folder held by another run, mismatched checkpoint, ...)."""


class NonFiniteLossError(RunError):
    """The training loss or the weights became NaN or Inf."""
