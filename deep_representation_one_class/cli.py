"""Shared command-line plumbing: quiet TensorFlow start-up and one-line errors.

Bad input must end in one actionable line on stderr and a non-zero exit, not a traceback;
``--verbose`` brings the traceback back for debugging.
"""

from __future__ import annotations

import logging as pylogging
import os
import sys
import traceback
from collections.abc import Callable

EXIT_USAGE = 2
EXIT_FAILURE = 1


_CHATTY_TF_MODULES = ("functional_saver.py", "checkpoint_management.py")


def _drop_tf_chatter(record: pylogging.LogRecord) -> bool:
    # TensorFlow logs every checkpoint shard through absl at INFO; keep our own INFO lines.
    return not record.pathname.endswith(_CHATTY_TF_MODULES)


def quiet_tensorflow() -> None:
    """Hides TensorFlow's C++ start-up chatter (must run before TensorFlow is imported)."""
    from absl import logging as absl_logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pylogging.getLogger("tensorflow").setLevel(pylogging.ERROR)
    absl_logging.get_absl_logger().addFilter(_drop_tf_chatter)


def require_tensorflow() -> None:
    """Exits with an install hint when no TensorFlow build is installed."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        print(
            'error: TensorFlow is not installed; run pip install -e ".[cpu]" (CPU) or '
            'pip install -e ".[gpu]" (CUDA)',
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILURE)


def entry_point(main: Callable[[], int]) -> None:
    """Console-script wrapper shared by the argparse CLIs: quiet start-up, then exit code."""
    quiet_tensorflow()
    require_tensorflow()
    sys.exit(main())


def _user_error_types() -> tuple[type[BaseException], ...]:
    from deep_representation_one_class.config import ConfigError

    types: list[type[BaseException]] = [ConfigError]
    try:
        from deep_representation_one_class.datasets import DataError

        types.append(DataError)
    except ImportError:  # pragma: no cover - datasets always importable in practice
        pass
    from deep_representation_one_class.augment.grammar import AugmentError

    types.append(AugmentError)
    return tuple(types)


def guard(fn: Callable[[], int | None], verbose: bool = False) -> int:
    """Runs ``fn``; turns exceptions into one line on stderr and an exit code."""
    try:
        return int(fn() or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_FAILURE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BaseException as e:
        if verbose:
            traceback.print_exc()
        from deep_representation_one_class.train_lib import RunError

        user = (*_user_error_types(), RunError)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, user):
            print(f"error: {msg}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(e, (OSError, MemoryError)):
            print(f"error: {type(e).__name__}: {msg}", file=sys.stderr)
            return EXIT_FAILURE
        hint = "" if verbose else " (rerun with --verbose for the traceback)"
        print(f"error: {type(e).__name__}: {msg}{hint}", file=sys.stderr)
        return EXIT_FAILURE
