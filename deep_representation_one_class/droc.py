"""The ``droc`` command: one entry point, one verb per job.

    droc train --method=contrastive          # train and evaluate a run
    droc score --model_dir=RUN IMAGES...     # score new images with a trained run
    droc --help                              # the verbs
    droc VERB --help                         # a verb's flags

Each verb is the command line of one module, imported only when the verb runs: this module
imports nothing but the standard library (and utils/allocator.py, which imports only that), so
``droc --help`` and a mistyped verb answer at
once, without loading TensorFlow. The older names stay as aliases of the same modules:
``python train_and_eval_loop.py`` (= ``droc train``), ``python -m
deep_representation_one_class.<verb>`` and the ``droc-<verb>`` console scripts.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import sys
from collections.abc import Sequence

from deep_representation_one_class.utils.allocator import ensure_fast_allocator

EXIT_USAGE = 2  # as cli.EXIT_USAGE (not imported: this module stays standard-library only)


@dataclasses.dataclass(frozen=True)
class Verb:
    """A ``droc`` verb and one line for ``--help``; ``deep_representation_one_class.<name>``
    is its module (also ``python -m``-runnable), whose ``run_cli()`` runs it."""

    name: str
    summary: str

    @property
    def module(self) -> str:
        return f"deep_representation_one_class.{self.name}"


# The order is the order of a run's life; ``droc --help`` lists them so.
VERBS: dict[str, Verb] = {
    v.name: v
    for v in (
        Verb("train", "train a representation and evaluate its classifiers"),
        Verb("evaluate", "re-fit and re-score a run's classifiers"),
        Verb("score", "score image files with a trained run (CSV)"),
        Verb("export", "export a run as a SavedModel"),
        Verb("explain", "attributions of a run's scores (IG, Grad-CAM)"),
        Verb("report", "write report.html for a run or a sweep"),
        Verb("aggregate", "tables of a sweep's runs next to the paper's"),
        Verb("bench", "speed of training, extraction and classifiers"),
    )
}


def usage() -> str:
    width = max(len(v) for v in VERBS)
    lines = [
        "usage: droc VERB [flags]      (droc VERB --help: the verb's flags)",
        "",
        "Deep one-class classification: train a representation on normal images, then score",
        "new images by how far they are from them.",
        "",
        "verbs:",
        *(f"  {v.name.ljust(width)}  {v.summary}" for v in VERBS.values()),
    ]
    return "\n".join(lines) + "\n"


def _unknown(verb: str) -> str:
    close = difflib.get_close_matches(verb, list(VERBS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"error: unknown verb '{verb}'{hint}; valid: {', '.join(VERBS)} (droc --help)"


def run_verb(verb: str, argv: Sequence[str], prog: str | None = None) -> None:
    """Runs ``verb`` with the flags ``argv`` as its own command line (``prog`` names it in
    usage lines). The verb's module, and with it TensorFlow, is imported here."""
    spec = VERBS[verb]
    sys.argv = [prog or f"droc {verb}", *argv]
    importlib.import_module(spec.module).run_cli()


def main(argv: Sequence[str] | None = None) -> int:
    """``droc [--help] VERB [flags]``; returns the exit status where no verb runs (a verb's
    command line exits the process itself)."""
    # First, before any verb module imports TensorFlow: re-execute once with tcmalloc (or glibc
    # tunables) where that applies (utils/allocator.py; standard library only).
    ensure_fast_allocator()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        if len(args) > 1 and args[0] == "help" and args[1] in VERBS:
            run_verb(args[1], ["--help"])
            return 0
        (sys.stdout if args else sys.stderr).write(usage())
        return 0 if args else EXIT_USAGE
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(_unknown(verb), file=sys.stderr)
        return EXIT_USAGE
    run_verb(verb, rest)
    return 0


def run_cli() -> None:
    """Console-script entry point (``droc``)."""
    sys.exit(main())


if __name__ == "__main__":
    run_cli()
