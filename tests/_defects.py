"""Helpers of the bad-input matrix for the defects cases (tests/e2e/test_bad_input_defects.py,
tests/e2e/test_bad_input_outputs.py): in-process commands, one-error-line checks, snapshots, tiny
image folders and run copies."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import _reliability as rel
import numpy as np
from absl import flags
from PIL import Image

from deep_representation_one_class import cli, main

FLAGS = flags.FLAGS
BAD = os.fsdecode(b"bad\xff")  # a test class folder whose name is not valid UTF-8
TINY_FLAGS = [f for f in rel.TINY if not f.startswith(("--dataset=", "--category="))]


# ----------------------------------------------------------------------------- helpers
def cli_run(argv, capsys) -> tuple[int, str]:
    FLAGS.unparse_flags()
    capsys.readouterr()
    try:
        code = cli.guard(lambda: main.main(main.parse_flags(["droc-train", *argv])))
    finally:
        FLAGS.unparse_flags()
    return code, capsys.readouterr().err


def command(entry, argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = entry([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_error(code: int, err: str, *fragments: str, status: int = cli.EXIT_USAGE) -> str:
    lines = rel.error_lines(err)
    assert code == status, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def no_error(code: int, err: str) -> None:
    assert code == 0 and not rel.error_lines(err), err


def unchanged(before: dict, root) -> None:
    """Every entry of ``before`` is still there with the same bytes (new files are allowed)."""
    after = rel.snapshot(root)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    assert not changed, changed


def png(path, pixels) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def pixels(seed: int, size=(16, 16), channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(*size, channels), dtype=np.uint8).squeeze()


def folder_data(root: Path, bad: str = "bad", train: int = 8, test: int = 3) -> Path:
    for i in range(train):
        png(root / "train" / "good" / f"{i}.png", pixels(i))
    for i in range(test):
        png(root / "test" / "good" / f"{i}.png", pixels(100 + i))
        png(root / "test" / bad / f"{i}.png", 255 - pixels(200 + i) // 4)
    return root


def folder_flags(root, run, cache, category="0") -> list[str]:
    return [
        *TINY_FLAGS,
        "--dataset=folder",
        f"--root={root}",
        f"--category={category}",
        "--input_shape=16,16,3",
        "--num_epoch=1",
        "--nobaselines",
        "--synthetic_holdout=0",
        f"--cache_dir={cache}",
        f"--model_dir={run}",
    ]


def copy_run(src, dst, **config) -> Path:
    shutil.copytree(src, dst)
    if config:  # point the copy at its own data (config.json and the summary's copy)
        for name in ("config.json", "summary.json"):
            path = Path(dst) / name
            doc = json.loads(path.read_text())
            target = doc if name == "config.json" else doc["config"]
            target.update(config)
            path.write_text(json.dumps(doc))
    return Path(dst)
