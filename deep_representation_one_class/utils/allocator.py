"""A fast memory allocator for the command-line programs, chosen before TensorFlow starts.

With glibc's default malloc, TensorFlow's CPU training maps and unmaps its large step buffers
on every step (glibc serves blocks above its dynamic mmap threshold with fresh ``mmap`` calls
and returns them with ``munmap``); the kernel must fault in and zero those pages again on every
use, and the arenas' locks add ``futex`` traffic. On a 2-core AVX2 machine this was 30-45% of
the training CPU time as *system* time. Two remedies, in order of preference:

* **tcmalloc** (Debian/Ubuntu: ``apt-get install libtcmalloc-minimal4``), loaded through
  ``LD_PRELOAD``: thread-caching, keeps freed memory for reuse.
* **glibc tunables** where tcmalloc is not installed: ``MALLOC_MMAP_THRESHOLD_``,
  ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` raised (values in ``GLIBC_TUNABLES``), so
  that large blocks are reused from the heap instead of mapped per step.

Both are read by the dynamic loader and by glibc when a process starts, so
``ensure_fast_allocator()`` re-executes the current command once, with the same interpreter and
arguments (``sys.executable``, ``sys.orig_argv``) and the environment extended. It must be the
first thing a program does (before TensorFlow is imported, so the re-exec costs a fraction of a
second), and it only acts in a program launched as one of this package's commands (``python -m
deep_representation_one_class...``, ``train_and_eval_loop.py``, the ``droc*`` console
scripts): imported by pytest, a notebook or a user's script it does nothing.

``DROC_ALLOCATOR`` chooses: ``auto`` (default: tcmalloc if installed, else glibc tunables),
``tcmalloc`` (error if not installed), ``glibc`` (tunables only) or ``system`` (leave the process
as started); ``DROC_TCMALLOC`` names the library where it is not in a system folder. A process
re-executes at most once (its pid is recorded in ``DROC_ALLOCATOR_EXEC``; exec keeps the pid),
and never when a malloc replacement is already loaded or the tunables are already set, so child
processes inherit the choice without re-executing.

This module imports nothing heavy (no TensorFlow, no numpy). ``python -m
deep_representation_one_class.utils.allocator`` prints what a command would run with.

Idea credit: preloading tcmalloc for TensorFlow CPU jobs is common practice (e.g. Intel's
TensorFlow performance guides recommend it); the code here is this package's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

__all__ = [
    "ENV_SWITCH",
    "GLIBC_TUNABLES",
    "MODES",
    "PATH_OVERRIDE",
    "AllocatorError",
    "current",
    "ensure_fast_allocator",
    "find_tcmalloc",
    "plan",
]

ENV_SWITCH = "DROC_ALLOCATOR"
PATH_OVERRIDE = "DROC_TCMALLOC"
MODES = ("auto", "tcmalloc", "glibc", "system")
# Marker of the re-exec: the pid of the process that re-executed itself (exec keeps the pid).
EXEC_MARK = "DROC_ALLOCATOR_EXEC"
# Preferred first: the minimal build has no profiler and no heap checker.
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
_LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)
# glibc's limit for the mmap threshold on 64-bit is 32 MiB (HEAP_MAX_SIZE / 2): blocks up to
# it come from the heap; a freed heap top is kept up to 512 MiB, and the heap grows in 64 MiB
# steps instead of one brk per block.
GLIBC_TUNABLES = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(512 * 2**20),
    "MALLOC_TOP_PAD_": str(64 * 2**20),
}
# tcmalloc prints a line for every allocation above 1 GiB by default (the OC-SVM kernel matrix
# of a large run is 2 GiB); only much larger ones are worth a line.
_TCMALLOC_QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(64 * 2**30)}
_REPLACEMENTS = ("libtcmalloc", "libjemalloc", "libmimalloc")
_PACKAGE = "deep_representation_one_class"


class AllocatorError(ValueError):
    """``DROC_ALLOCATOR`` is invalid or asks for a library that is not installed."""


def find_tcmalloc(env: Mapping[str, str] | None = None) -> str | None:
    """Path of an installed tcmalloc: ``DROC_TCMALLOC`` if set (a library outside the system
    folders, e.g. a conda environment's; a path that is not a file counts as "not installed"),
    else the dynamic loader's cache, else known folders."""
    env = os.environ if env is None else env
    if env.get(PATH_OVERRIDE):
        path = env[PATH_OVERRIDE]
        if os.path.isfile(path):
            return path
        print(f"warning: {PATH_OVERRIDE}={path} is not a file; tcmalloc is not used",
              file=sys.stderr)  # fmt: skip
        return None
    try:
        out = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    # Lines like "libtcmalloc_minimal.so.4 (libc6,x86-64) => /lib/x86_64-linux-gnu/...";
    # a 64-bit process needs the 64-bit build where a multiarch system lists both.
    found: dict[str, list[tuple[bool, str]]] = {}
    for line in out.splitlines():
        name, sep, path = line.strip().partition(" => ")
        lib = name.split(" ", 1)[0]
        if sep and lib in TCMALLOC_NAMES and os.path.isfile(path.strip()):
            wide = any(tag in name for tag in ("x86-64", "64bit", "AArch64"))
            found.setdefault(lib, []).append((not wide, path.strip()))
    for lib in TCMALLOC_NAMES:
        if lib in found:
            return sorted(found[lib])[0][1]
        for folder in _LIB_DIRS:
            path = os.path.join(folder, lib)
            if os.path.isfile(path):
                return path
    return None


def _loaded_replacement(maps: str = "/proc/self/maps") -> str | None:
    """Path of a malloc replacement mapped into this process (tcmalloc, jemalloc, mimalloc)."""
    try:
        with open(maps, encoding="ascii", errors="replace") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1] if line.count(" ") >= 5 else ""
                if any(os.path.basename(path).startswith(r) for r in _REPLACEMENTS):
                    return path
    except OSError:
        pass
    return None


def _mode(env: Mapping[str, str]) -> str:
    mode = env.get(ENV_SWITCH, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise AllocatorError(
            f"{ENV_SWITCH}={env.get(ENV_SWITCH)!r} is not one of {', '.join(MODES)} "
            "(unset it for the default, auto)"
        )
    return mode


def plan(
    env: Mapping[str, str],
    *,
    pid: int,
    loaded: str | None,
    tcmalloc: str | None,
) -> dict[str, str] | None:
    """The environment changes a re-exec needs, or None when the process should run as is.

    Args:
      env: the current environment.
      pid: this process's id (the loop guard compares it with ``DROC_ALLOCATOR_EXEC``).
      loaded: a malloc replacement already mapped into the process (None: glibc's malloc).
      tcmalloc: the installed tcmalloc library (None: not installed).

    Raises:
      AllocatorError: an unknown ``DROC_ALLOCATOR``, or ``tcmalloc`` asked for but absent.
    """
    mode = _mode(env)
    if mode == "system" or env.get(EXEC_MARK) == str(pid) or loaded:
        return None
    if mode == "tcmalloc" and not tcmalloc:
        raise AllocatorError(
            f"{ENV_SWITCH}=tcmalloc but no tcmalloc is installed; install it (Debian/Ubuntu: "
            "apt-get install libtcmalloc-minimal4) or unset the variable"
        )
    changes = {EXEC_MARK: str(pid)}
    if mode in ("auto", "tcmalloc") and tcmalloc:
        preload = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p]
        changes["LD_PRELOAD"] = " ".join([tcmalloc, *preload])
        changes.update({k: v for k, v in _TCMALLOC_QUIET.items() if k not in env})
        return changes
    missing = {k: v for k, v in GLIBC_TUNABLES.items() if k not in env}
    if not missing:
        return None  # set by the user or inherited from a parent: glibc already read them
    changes.update(missing)
    return changes


def current(env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """What this process runs with: ``{"allocator", "library", "tunables", "switch"}``.

    ``allocator`` is ``tcmalloc``/``jemalloc``/``mimalloc`` (a replacement is mapped in),
    ``glibc-tuned`` (glibc malloc with some ``MALLOC_*_`` tunable in the environment) or
    ``glibc``. Recorded in a run's ``config.json`` (``runtime``) and in the benchmark's JSON.
    """
    env = os.environ if env is None else env
    library = _loaded_replacement()
    tunables = ",".join(f"{k}={env[k]}" for k in GLIBC_TUNABLES if k in env) or None
    if library:
        name = os.path.basename(library).removeprefix("lib").split(".", 1)[0]
        allocator = "tcmalloc" if name.startswith("tcmalloc") else name
    else:
        allocator = "glibc-tuned" if tunables else "glibc"
    return {
        "allocator": allocator,
        "library": library,
        "tunables": tunables,
        "switch": env.get(ENV_SWITCH, "auto"),
    }


def _runs_as_command() -> bool:
    """Whether this process was launched as one of the package's commands."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and (spec.name == _PACKAGE or spec.name.startswith(_PACKAGE + ".")):
        return True
    name = os.path.basename(getattr(main, "__file__", None) or "")
    return name == "train_and_eval_loop.py" or name.startswith("droc")


def ensure_fast_allocator(force: bool = False) -> None:
    """Re-executes this command once with tcmalloc (or glibc tunables) unless it has them.

    Call it first thing in a program, before TensorFlow is imported. It returns without doing
    anything when the process is not one of the package's commands (``force=True`` skips that
    check, for a program of one's own), on platforms without ``/proc``, with
    ``DROC_ALLOCATOR=system``, or when the process already has what it needs. An invalid
    ``DROC_ALLOCATOR`` ends the program with one line on stderr and exit status 2.
    """
    if not sys.platform.startswith("linux") or not (force or _runs_as_command()):
        return
    try:
        changes = plan(
            os.environ,
            pid=os.getpid(),
            loaded=_loaded_replacement(),
            tcmalloc=find_tcmalloc() if _mode(os.environ) in ("auto", "tcmalloc") else None,
        )
    except AllocatorError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if not changes:
        return
    env = {**os.environ, **changes}
    argv = [sys.executable, *getattr(sys, "orig_argv", sys.argv)[1:]]
    if not getattr(sys, "orig_argv", None):  # Python < 3.10: argv lacks interpreter options
        argv = [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError as e:  # the process goes on as started: slower, still correct
        print(f"warning: could not re-execute with a faster allocator ({e})", file=sys.stderr)


def _print_state(argv: Sequence[str]) -> int:
    """``python -m deep_representation_one_class.utils.allocator``: what a command runs with."""
    del argv
    ensure_fast_allocator()
    state = dict(current())
    state["LD_PRELOAD"] = os.environ.get("LD_PRELOAD")
    state["reexecuted"] = str(os.environ.get(EXEC_MARK) == str(os.getpid())).lower()
    print(json.dumps(state, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(_print_state(sys.argv))
