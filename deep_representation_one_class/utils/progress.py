"""Progress of long phases: a tqdm bar on a terminal and log lines everywhere.

A phase that can run for minutes must say so while it runs: under a batch system or with the
output in a file there is no terminal for a bar, and a silent process looks hung (and gets
killed). ``phase`` logs its start and its duration; ``track`` wraps the phase's loop with a tqdm
bar (shown only on a terminal) and logs ``done/total, elapsed, remaining`` at most every
``LOG_EVERY_S`` seconds, so the log alone tells how far a run got.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["LOG_EVERY_S", "phase", "track"]

LOG_EVERY_S = 30.0
T = TypeVar("T")
_logger = logging.getLogger("deep_representation_one_class.progress")


def track(
    items: Iterable[T],
    total: int,
    desc: str,
    unit: str = "it",
    weights: Iterable[int] | None = None,
    logger: logging.Logger | None = None,
) -> Iterator[T]:
    """Yields ``items``; a tqdm bar on a terminal, a log line every ``LOG_EVERY_S`` seconds.

    Args:
      items: the loop's iterable.
      total: the work in ``unit`` (e.g. windows), for the percentage and the time left.
      desc: what is being done (``"test windows"``).
      unit: the unit of ``total``.
      weights: the work of each item (e.g. windows per chunk); None counts each item as 1.
      logger: where the lines go (default: this module's).
    """
    log = logger or _logger
    weights_it = iter(weights) if weights is not None else None
    start = last = time.monotonic()
    done = 0
    with tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False) as bar:
        for item in items:
            yield item
            step = next(weights_it) if weights_it is not None else 1
            done += step
            bar.update(step)
            now = time.monotonic()
            if now - last >= LOG_EVERY_S and done < total:
                last = now
                rate = done / max(now - start, 1e-9)
                log.info(
                    "%s: %d/%d %s (%.0f%%), %.0f s, about %.0f s left",
                    desc,
                    done,
                    total,
                    unit,
                    100.0 * done / max(total, 1),
                    now - start,
                    (total - done) / max(rate, 1e-9),
                )


@contextlib.contextmanager
def phase(label: str, timings: dict[str, float] | None = None, key: str | None = None, logger=None):
    """Logs the start and the duration of a phase; stores its seconds in ``timings[key]``."""
    log = logger or _logger
    log.info("%s ...", label)
    t0 = time.monotonic()
    yield
    seconds = time.monotonic() - t0
    if timings is not None:
        timings[key or label] = seconds
    log.info("%s: done in %.1f s.", label, seconds)
