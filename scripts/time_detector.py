#!/usr/bin/env python
"""Time what serving a run costs: import, ``Detector.load`` and scoring images (wall and CPU).

    python scripts/time_detector.py --model_dir=RUN --images=DIR [--rounds=3]
    python scripts/time_detector.py --cap=20000      # refit vs load of the five classifiers

The first form prints, per round, the seconds (wall / CPU of this process, all threads) of
importing the package, loading the run and scoring the images. CPU seconds hardly change with the
machine's load, wall seconds do. ``--cap=N`` fits the five classifiers on N synthetic 512-d rows
(90% of them, as a run does) and loads the saved fit, to show what loading saves over refitting
at a large classifier-train set (versions before 0.2 refit on every ``Detector.load``).
Each round runs in a fresh process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

_ROUND = r"""
import sys, time
t0, c0 = time.perf_counter(), time.process_time()
from deep_representation_one_class.serving.detector import Detector
t1, c1 = time.perf_counter(), time.process_time()
det = Detector.load(sys.argv[1])
t2, c2 = time.perf_counter(), time.process_time()
images, paths = det.load_images(sys.argv[2])
det.score(images)
t3, c3 = time.perf_counter(), time.process_time()
print(f"{len(paths)} images: import {t1 - t0:.2f} s / {c1 - c0:.2f} CPU-s, "
      f"load {t2 - t1:.2f} s / {c2 - c1:.2f} CPU-s, score {t3 - t2:.2f} s / {c3 - c2:.2f} CPU-s")
"""

_CAP = r"""
import sys, tempfile, time
import numpy as np
from deep_representation_one_class.evaluation import classifiers as C
n = int(sys.argv[1])
x = np.random.default_rng(0).normal(size=(n, 512)).astype(np.float32)
split = C.split_rows(n, 0, 0.1)
t0, c0 = time.perf_counter(), time.process_time()
fitted = C.fit({"pool": x}, ["auc", "kde", "gde", "kocsvm", "locsvm"], split, on_error="raise")
t1, c1 = time.perf_counter(), time.process_time()
folder = tempfile.mkdtemp()
fitted.save(folder)
t2, c2 = time.perf_counter(), time.process_time()
C.ClassifierSet.load(folder)
t3, c3 = time.perf_counter(), time.process_time()
print(f"fit of the five classifiers on {split.fit_rows.size} x 512: {t1 - t0:.1f} s / "
      f"{c1 - c0:.1f} CPU-s; loading the saved fit: {t3 - t2:.2f} s / {c3 - c2:.2f} CPU-s")
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir")
    p.add_argument("--images")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cap", type=int, default=0)
    args = p.parse_args(argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if args.cap:
        cmd = [sys.executable, "-c", _CAP, str(args.cap)]
    elif args.model_dir and args.images:
        cmd = [sys.executable, "-c", _ROUND, args.model_dir, args.images]
    else:
        p.error("pass --model_dir and --images, or --cap")
    for _ in range(1 if args.cap else args.rounds):
        with tempfile.TemporaryDirectory() as cwd:
            out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr.strip().splitlines()[-1], file=sys.stderr)
            return out.returncode
        print(f"{out.stdout.strip()}  (load average {os.getloadavg()[0]:.1f})")
        time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
