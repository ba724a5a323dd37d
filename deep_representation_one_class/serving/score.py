"""Command line: score image files with a trained run and flag the anomalous ones.

    python -m deep_representation_one_class.score --model_dir=RUN --images=DIR_OR_GLOB \\
        --out=scores.csv [--classifiers=kde,gde] [--threshold=q95] [--feature=pool]

(also installed as ``droc-score``). Patch-level runs (MVTec layout) are scored by
``score_patches.py``: image scores and decisions, ``--maps`` PNGs, ``--threshold=f1``,
``--normalized`` and ``--tile``. The CSV has one row per image, in file order: ``path``,
then ``<classifier>_score`` for each classifier (higher = more anomalous), then
``<classifier>_anomalous`` (1 when ``score >= threshold``). With ``--skip_corrupt``,
unusable files (undecodable, not regular files, above the pixel cap) follow with empty scores
and the reason in a last ``skipped`` column. An existing ``--out`` is refused unless
``--overwrite``; the run's own files never are written over. ``--threshold`` is an inlier-score
quantile of the run (``q50``, ``q80``, ``q90``, ``q95``, ``q99``, ``q99.5``, ``max``; see
``thresholds.py``) or a number, for all classifiers or per classifier (``kde=q99,gde=-120``).
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Mapping, Sequence

from deep_representation_one_class import catalog, cli
from deep_representation_one_class.evaluation import thresholds as thresholds_lib
from deep_representation_one_class.serving.detector import Detector, DetectorError
from deep_representation_one_class.serving.score_patches import run_patch_score
from deep_representation_one_class.training.run_dir import is_run_output
from deep_representation_one_class.utils import io


def parse_threshold_arg(text: str, classifiers: Sequence[str]) -> dict[str, str | float]:
    """``--threshold`` -> classifier -> spec.

    Args:
      text: ``q95``/``1.5`` (every classifier) or ``kde=q99,gde=-120`` (the others get q95).
      classifiers: canonical classifier names.

    Raises:
      ThresholdError: a malformed spec or an unknown classifier name.
    """
    text = text.strip()
    if "=" not in text:
        spec = thresholds_lib.parse_spec(text)
        return dict.fromkeys(classifiers, spec)
    out: dict[str, str | float] = dict.fromkeys(classifiers, thresholds_lib.DEFAULT_SPEC)
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in out:
            raise thresholds_lib.ThresholdError(
                f"--threshold item '{item}' must be CLASSIFIER=SPEC with CLASSIFIER one of "
                f"{', '.join(classifiers)}"
            )
        out[name] = thresholds_lib.parse_spec(value)
    return out


def write_csv(
    path: str,
    paths: Sequence[str],
    scores: Mapping[str, Sequence[float]],
    flags: Mapping[str, Sequence[bool]],
    skipped: Sequence[tuple[str, str]] | None = None,
    output: io.Output | None = None,
) -> None:
    """Writes the score table atomically (columns: path, <clf>_score…, <clf>_anomalous…).

    With ``skipped`` (``--skip_corrupt``), a last column ``skipped`` holds the reason for each
    left-out file, listed after the scored ones with empty scores. File names that are not
    valid UTF-8 are written with their original bytes (``surrogateescape``), so the CSV names
    exactly the files on disk. ``output`` (``io.Output``) puts the file into place without
    losing another command's file; default: replace ``path``.
    """
    names = list(scores)
    extra = ["skipped"] if skipped is not None else []
    with (
        (output or io.Output(path, overwrite=True)).open(".csv") as tmp,
        open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f,
    ):
        writer = csv.writer(f)
        writer.writerow(
            ["path", *(f"{n}_score" for n in names), *(f"{n}_anomalous" for n in names), *extra]
        )
        for i, p in enumerate(paths):
            writer.writerow(
                [
                    p,
                    *(repr(float(scores[n][i])) for n in names),
                    *(int(bool(flags[n][i])) for n in names),
                    *([""] if extra else []),
                ]
            )
        for p, why in skipped or ():
            writer.writerow([p, *([""] * (2 * len(names))), why])


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(
        prog=cli.prog_name("droc-score"),
        description="Score images with a trained one-class run and write a CSV of anomaly "
        "scores and decisions.",
    )
    p.add_argument("--model_dir", required=True, help="run folder of a finished training run")
    p.add_argument(
        "--images",
        required=True,
        action="append",
        help="an image file, a folder (searched recursively) or a glob such as 'dir/**/*.png' "
        "(quote it); repeatable. PNG/JPEG/BMP in any mode (grayscale, RGBA, palette)",
    )
    p.add_argument("--out", required=True, help="CSV file to write (refused if it exists)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--classifiers",
        default=None,
        help=f"comma-separated classifiers ({catalog.summary('scorer')}); default: the run's",
    )
    p.add_argument(
        "--threshold",
        default=thresholds_lib.DEFAULT_SPEC,
        help="inlier-score quantile (q50, q80, q90, q95, q99, q99.5, max) or a number; or "
        "per classifier, e.g. kde=q99,gde=-120 (default q95)",
    )
    p.add_argument(
        "--feature",
        default="pool",
        choices=("pool", "embed"),
        help="features the classifiers use: pool = f (paper), embed = g(f)",
    )
    p.add_argument("--batch_size", type=int, default=None, help="images per forward pass")
    p.add_argument(
        "--skip_corrupt",
        action="store_true",
        help="leave out files that cannot be decoded (or are not regular files, or exceed the "
        "pixel cap) instead of failing; they are listed after the scored rows with empty "
        "scores and the reason in a 'skipped' column",
    )
    # Patch-level runs (MVTec layout): maps, F1 thresholds, normalised scores, tiles.
    p.add_argument(
        "--maps",
        default=None,
        help="patch-level runs: folder for one PNG per image (image | anomaly map | overlay "
        "with the region at or above the pixel threshold outlined)",
    )
    p.add_argument(
        "--val_images",
        default=None,
        help="patch-level runs with --threshold=f1: labelled images in the MVTec layout "
        "(DIR/test/good, DIR/test/<defect>, DIR/ground_truth/<defect>/<stem>_mask.png)",
    )
    p.add_argument(
        "--normalized",
        action="store_true",
        help="patch-level runs: add <scorer>_normalized columns, scores on [0, 1] with the "
        "image threshold at 0.5",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=0,
        help="patch-level runs: cut each image into overlapping NxN tiles of its own pixels, "
        "score them at one scale and stitch the maps (large images; 0 = whole images)",
    )
    p.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    return p


def check_out(path: str, run_dir: str, overwrite: bool) -> None:
    """Refuses an existing ``--out`` (unless ``overwrite``) and any file of the run itself."""
    if is_run_output(run_dir, path):
        raise DetectorError(
            f"--out {path} would write over the run's own files; write the CSV elsewhere"
        )
    if os.path.isdir(path):
        raise DetectorError(f"--out {path} is a folder; give a CSV file name")
    if os.path.lexists(path) and not overwrite:
        raise DetectorError(f"--out {path} exists; add --overwrite to replace it")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input)."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        if args.batch_size is not None and args.batch_size < 1:
            raise DetectorError(f"--batch_size must be >= 1, got {args.batch_size}")
        check_out(args.out, args.model_dir, args.overwrite)
        output = io.Output(args.out, args.overwrite).check()
        names = None
        if args.classifiers:
            names = [n.strip() for n in args.classifiers.split(",") if n.strip()]
        # Check the threshold syntax before the (slower) model load.
        if "=" not in args.threshold and args.threshold.strip().lower() != "f1":
            thresholds_lib.parse_spec(args.threshold)
        if args.tile < 0:
            raise DetectorError(f"--tile must be >= 0 (0 = whole images), got {args.tile}")
        det = Detector.load(args.model_dir, names, args.feature)
        if getattr(det, "level", "image") == "patches":
            return run_patch_score(args, det)
        patch_only = [
            flag
            for flag, used in (
                ("--maps", args.maps),
                ("--val_images", args.val_images),
                ("--normalized", args.normalized),
                ("--tile", args.tile),
                ("--threshold=f1", args.threshold.strip().lower() == "f1"),
            )
            if used
        ]
        if patch_only:
            raise DetectorError(
                f"{', '.join(patch_only)} serve patch-level runs (dataset mvtec); "
                f"{args.model_dir} is an image-level run"
            )
        specs = parse_threshold_arg(args.threshold, det.classifiers)
        thresholds = {n: det.threshold(n, specs[n]) for n in det.classifiers}
        skipped: list[tuple[str, str]] = []
        images, paths = det.load_images(args.images, args.skip_corrupt, skipped)
        scores = det.score(images, args.batch_size)
        flags = {n: scores[n] >= thresholds[n] for n in det.classifiers}
        write_csv(args.out, paths, scores, flags, skipped if args.skip_corrupt else None, output)
        summary = ", ".join(
            f"{n} {int(flags[n].sum())} (>= {specs[n]} = {thresholds[n]:.4g})"
            for n in det.classifiers
        )
        left_out = f" ({len(skipped)} skipped, see its 'skipped' column)" if skipped else ""
        print(f"scored {len(paths)} images -> {args.out}{left_out}; flagged anomalous: {summary}")
        return 0

    return cli.guard(run, verbose=args.verbose)


def run_cli() -> None:
    """Console-script entry point (``droc-score``)."""
    cli.entry_point(main)


if __name__ == "__main__":
    run_cli()
