"""Phase times of a patch-level evaluation on an MVTec-layout category, and its resume.

    python scripts/patch_phases.py --root=../shared/data/mvtec_ad --category=bottle \
        --train_steps=100 --label=this --out=results/patch_eval_phases.jsonl \
        [--interrupt_at="Synthetic-anomaly check"] [--repo=PATH]

Trains the bare ``--dataset=mvtec`` contrastive job for ``--train_steps`` (the evaluation's
cost does not depend on the training length) and appends one JSON line with the evaluation's
phase times from ``summary.json`` (``run.timings``), the wall and CPU seconds and the load.
``--interrupt_at`` sends SIGTERM when that text first appears in the log (e.g. the start of the
synthetic check, after the test windows were extracted), then runs the same command again
and records the resumed evaluation's times too. ``--repo`` runs another checkout's
``train_and_eval_loop.py`` (e.g. an older version, for a before/after table).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd, cwd, interrupt_at: str | None) -> tuple[int, float, float, float, str]:
    """(exit status, wall s, user s, system s, log) of one command; SIGTERM at a log line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    log = []
    for line in proc.stdout:
        log.append(line)
        if interrupt_at and interrupt_at in line:
            proc.send_signal(signal.SIGTERM)
            interrupt_at = None
    rc = proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        rc,
        time.time() - t0,
        after.ru_utime - before.ru_utime,
        after.ru_stime - before.ru_stime,
        "".join(log),
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True)
    p.add_argument("--category", default="bottle")
    p.add_argument("--train_steps", type=int, default=100)
    p.add_argument("--label", default="this")
    p.add_argument("--out", default="results/patch_eval_phases.jsonl")
    p.add_argument("--model_dir", default="runs/patch_phases")
    p.add_argument("--interrupt_at", default="")
    p.add_argument("--repo", default=ROOT, help="checkout whose train_and_eval_loop.py runs")
    args, extra = p.parse_known_args()
    if not os.path.isdir(os.path.join(args.root, args.category)):
        print(f"error: {args.root}/{args.category} is not a folder", file=sys.stderr)
        return 2
    model_dir = os.path.abspath(os.path.join(args.model_dir, args.label))
    cmd = [
        sys.executable,
        "train_and_eval_loop.py",
        "--method=contrastive",
        "--dataset=mvtec",
        f"--category={args.category}",
        f"--root={os.path.abspath(args.root)}",
        f"--train_steps={args.train_steps}",
        f"--model_dir={model_dir}",
        "--force_init",
        "--report=false",
        *extra,
    ]
    runs = []
    load = os.getloadavg()
    rc, wall, user, system, log = _run(cmd, args.repo, args.interrupt_at or None)
    runs.append(("first", rc, wall, user, system))
    if args.interrupt_at:
        if rc == 0:
            print("error: the run finished before the interruption point", file=sys.stderr)
            return 1
        resume = [c for c in cmd if c != "--force_init"]
        rc, wall, user, system, log = _run(resume, args.repo, None)
        runs.append(("resumed", rc, wall, user, system))
    if rc != 0:
        print(log[-3000:], file=sys.stderr)
        return 1
    with open(os.path.join(model_dir, "summary.json")) as f:
        summary = json.load(f)
    with open("/proc/cpuinfo") as f:
        flags = next(ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags"))
    record = {
        "label": args.label,
        "category": args.category,
        "train_steps": args.train_steps,
        "interrupt_at": args.interrupt_at or None,
        "runs": [
            dict(run=n, exit=c, wall_s=round(w, 1), user_s=round(u, 1), sys_s=round(s, 1))
            for n, c, w, u, s in runs
        ],
        "eval_seconds": summary["run"]["eval_seconds"],
        "eval_cpu_seconds": summary["run"]["eval_cpu_seconds"],
        "timings": summary["run"]["timings"],
        "metrics": {
            k: round(v, 2)
            for k, v in summary["metrics"].items()
            if k in ("pool.auc", "pool.auc.pixel_auroc", "pool.auc.pro", "synthetic.pool.auc")
        },
        "load_start": [round(v, 2) for v in load],
        "load_end": [round(v, 2) for v in os.getloadavg()],
        "cpu_flags": sorted(x for x in flags if x.startswith(("avx512_bf16", "avx512f", "avx2"))),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(json.dumps(record))
    with open(os.path.join(ROOT, args.out), "a") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
