"""Writing ``report.html`` + ``report_files/`` without ever losing a page or a user's file.

* Ownership: a ``report.html`` or ``report_files/`` that this package did not write (a user's
  own page in a sweep folder) is never written over; the command refuses, naming it.
* Write aside, switch at the end: the new figures go to a hidden folder next to the old one and
  the new page to a temporary file; only when everything is written are the old
  ``report_files/`` moved away, the new one renamed into place and the page renamed over the
  old page. A failure before the switch (a full disk, a stop) leaves the old page and every
  figure it links to as they were. Debris of a writer that was killed is removed the next time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable

from deep_representation_one_class.errors import UserError
from deep_representation_one_class.utils import io, run_folder

REPORT = run_folder.REPORT
FILES = run_folder.REPORT_FILES
# Marks a report_files/ folder (and, as a <meta> tag, a page) as this package's.
MARKER = ".droc_report"
GENERATOR = '<meta name="generator" content="deep_representation_one_class">'
# Pages written before the generator tag carry this rule of the package's style sheet.
_OLD_SIGNATURE = ".thumb.out img { border-color: #d62728; }"
_NEW_PREFIX = ".report_files.new-"
_OLD_PREFIX = ".report_files.old-"


class NotOurReportError(UserError, ValueError):
    """``report.html`` or ``report_files/`` belongs to someone else."""


def _is_our_page(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return GENERATOR in head or _OLD_SIGNATURE in head


def _is_our_files(folder: str, legacy_names: Callable[[str], bool]) -> bool:
    if os.path.exists(os.path.join(folder, MARKER)):
        return True
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return all(legacy_names(n) for n in names)  # written before the marker existed


def check_owned(root: str, legacy_names: Callable[[str], bool]) -> None:
    """Refuses to write over a ``report.html``/``report_files`` in ``root`` that is not ours.

    ``legacy_names(name)``: whether a file name in a marker-less ``report_files/`` is one this
    package writes (folders written by older versions carry no marker).

    Raises:
      NotOurReportError: naming the file or folder.
    """
    page = os.path.join(root, REPORT)
    if os.path.lexists(page) and not (os.path.isfile(page) and _is_our_page(page)):
        raise NotOurReportError(
            f"{page} was not written by this package; move it away (the report of {root} "
            "would replace it)"
        )
    files = os.path.join(root, FILES)
    if os.path.lexists(files) and not (
        os.path.isdir(files) and not os.path.islink(files) and _is_our_files(files, legacy_names)
    ):
        raise NotOurReportError(
            f"{files} was not written by this package; move it away (the report of {root} "
            "would replace it)"
        )


def _remove_debris(root: str) -> None:
    for name in os.listdir(root):
        if name.startswith((_NEW_PREFIX, _OLD_PREFIX)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def write_page(root: str, render: Callable[[str], str]) -> str:
    """Writes ``root/report.html`` and ``root/report_files/`` by switching at the end.

    Args:
      root: the run or sweep folder.
      render: ``render(files_dir)`` writes the figures into ``files_dir`` and returns the
        page's HTML (which links them as ``report_files/<name>``).

    Returns:
      The page's path.
    """
    _remove_debris(root)
    new = tempfile.mkdtemp(prefix=_NEW_PREFIX, dir=root)
    tmp_page = None
    old = None
    try:
        os.chmod(new, 0o755)
        with open(os.path.join(new, MARKER), "w", encoding="utf-8") as f:
            f.write("written by deep_representation_one_class\n")
        text = render(new)
        # Names that are not valid UTF-8 (surrogate escapes) are shown as \xNN, never fail.
        data = text.encode("utf-8", "backslashreplace")
        fd, tmp_page = tempfile.mkstemp(prefix=".tmp_", suffix=".html", dir=root)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_page, io.FILE_MODE)
        final = os.path.join(root, FILES)
        # The switch: renames only, nothing left to allocate.
        if os.path.lexists(final):
            old = tempfile.mkdtemp(prefix=_OLD_PREFIX, dir=root)
            os.replace(final, os.path.join(old, FILES))
        try:
            os.replace(new, final)
            os.replace(tmp_page, os.path.join(root, REPORT))
            tmp_page = None
        except BaseException:
            if old is not None and not os.path.lexists(final):
                os.replace(os.path.join(old, FILES), final)  # the old page keeps its figures
            raise
        io.fsync_dir(root)
    finally:
        if tmp_page is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp_page)
        if os.path.isdir(new):
            shutil.rmtree(new, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return os.path.join(root, REPORT)
