"""Interleaved A/B runs of the main job under different allocators, thread settings and CPU ISAs.

    python scripts/allocator_ab.py --steps=200 --rounds=2 \
        --conditions=system,glibc,tcmalloc --isas=native,avx2 \
        --out=results/allocator.jsonl --table=results/allocator.md

Every round runs each (ISA, condition) pair once, in the same order, so that a change of load
on a shared machine hits every condition alike. Each run is the bare contrastive command
(``python train_and_eval_loop.py --method=contrastive``) with ``--train_steps`` and its own
``--model_dir``, in a child process; its user and system CPU seconds come from
``resource.getrusage(RUSAGE_CHILDREN)`` around it (the re-exec of ``utils/allocator.py`` keeps
the process, so it is counted), its steps/s from the training log (epochs after the first,
which holds the tracing) and its AUROCs from ``summary.json``.

ISAs: ``native`` (the CPU as it is) and ``avx2`` (oneDNN capped with
``ONEDNN_MAX_CPU_ISA=AVX2``, as on a CPU without AVX-512; ``--precision=auto`` then picks
float32). Conditions are environment settings (``CONDITIONS``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> environment changes (None removes a variable).
CONDITIONS: dict[str, dict[str, str | None]] = {
    "system": {"DROC_ALLOCATOR": "system"},
    "glibc": {"DROC_ALLOCATOR": "glibc"},
    "tcmalloc": {"DROC_ALLOCATOR": "tcmalloc"},
    # Thread pools: TensorFlow sizes both to the cores by default.
    "tcmalloc_inter1": {"DROC_ALLOCATOR": "tcmalloc", "TF_NUM_INTEROP_THREADS": "1"},
    "tcmalloc_intra1": {"DROC_ALLOCATOR": "tcmalloc", "TF_NUM_INTRAOP_THREADS": "1"},
}
ISAS: dict[str, dict[str, str | None]] = {
    "native": {"ONEDNN_MAX_CPU_ISA": None},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
}
_STEPS_RE = re.compile(r"epoch (\d+)/\d+ step (\d+)/\d+: loss ([0-9.]+).* ([0-9.]+) steps/s")
_CHILD_ENV = ("LD_PRELOAD", "DROC_ALLOCATOR_EXEC", "MALLOC_MMAP_THRESHOLD_",
              "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")  # fmt: skip


def cpu_flags() -> list[str]:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    return []


def run_once(isa: str, cond: str, steps: int, model_dir: str, extra: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV}
    for k, v in {**ISAS[isa], **CONDITIONS[cond]}.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    cmd = [
        sys.executable,
        "train_and_eval_loop.py",
        "--method=contrastive",
        f"--train_steps={steps}",
        f"--model_dir={model_dir}",
        "--force_init",
        "--report=false",
        *extra,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    epochs = [
        (int(m[1]), int(m[2]), float(m[3]), float(m[4])) for m in _STEPS_RE.finditer(proc.stderr)
    ]
    with open(os.path.join(ROOT, model_dir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(ROOT, model_dir, "config.json")) as f:
        runtime = json.load(f).get("runtime", {})
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    later = [e[3] for e in epochs[1:]] or [e[3] for e in epochs]
    run = summary["run"]
    return {
        "isa": isa,
        "condition": cond,
        "env": {**ISAS[isa], **CONDITIONS[cond]},
        "steps": steps,
        "wall_s": round(wall, 1),
        "user_s": round(user, 1),
        "sys_s": round(system, 1),
        "sys_pct": round(100 * system / max(user + system, 1e-9), 1),
        "steps_per_s": round(statistics.median(later), 3),
        "train_seconds": run["train_seconds"],
        "eval_seconds": run["eval_seconds"],
        "final_loss": epochs[-1][2] if epochs else None,
        "precision": summary["config"]["precision"],
        "pool_gde": round(summary["metrics"].get("pool.gde", float("nan")), 2),
        "embed_gde": round(summary["metrics"].get("embed.gde", float("nan")), 2),
        "runtime": runtime,
        "load_1min_start": round(load, 2),
        "cpu_flags": cpu_flags(),
        "cores": len(os.sched_getaffinity(0)),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def table(records: list[dict]) -> str:
    """Markdown: medians per (ISA, condition) over the rounds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["isa"], r["condition"]), []).append(r)
    lines = [
        "| ISA | condition | allocator | precision | runs | steps/s | wall s | user s | system s "
        "| system % | pool GDE | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    for (isa, cond), rows in groups.items():
        lines.append(
            f"| {isa} | {cond} | {rows[0]['runtime'].get('allocator')} | {rows[0]['precision']} "
            f"| {len(rows)} | {med(rows, 'steps_per_s'):.2f} | {med(rows, 'wall_s'):.0f} "
            f"| {med(rows, 'user_s'):.0f} | {med(rows, 'sys_s'):.1f} | {med(rows, 'sys_pct'):.1f} "
            f"| {med(rows, 'pool_gde'):.1f} | {med(rows, 'load_1min_start'):.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--first_round", type=int, default=0, help="number of the first round")
    p.add_argument("--conditions", default="system,glibc,tcmalloc")
    p.add_argument("--isas", default="native,avx2")
    p.add_argument("--out", default="results/allocator.jsonl")
    p.add_argument("--table", default="", help="write the Markdown table of --out here")
    p.add_argument("--runs", default="runs/allocator_ab", help="folder of the run folders")
    p.add_argument("--table_only", action="store_true", help="only rebuild --table from --out")
    args, extra = p.parse_known_args()
    conds = [c for c in args.conditions.split(",") if c]
    isas = [i for i in args.isas.split(",") if i]
    bad = [c for c in conds if c not in CONDITIONS] + [i for i in isas if i not in ISAS]
    if bad or args.steps < 1 or args.rounds < 1:
        print(f"error: unknown conditions/ISAs {bad} (valid: {', '.join(CONDITIONS)}; "
              f"{', '.join(ISAS)}) or --steps/--rounds < 1", file=sys.stderr)  # fmt: skip
        return 2
    if not args.table_only:
        for k in range(args.rounds):
            for isa in isas:
                for cond in conds:
                    model_dir = os.path.join(args.runs, f"{isa}_{cond}")
                    rec = run_once(isa, cond, args.steps, model_dir, extra)
                    rec["round"] = args.first_round + k
                    print(json.dumps(rec), flush=True)
                    with open(os.path.join(ROOT, args.out), "a") as f:
                        f.write(json.dumps(rec) + "\n")
    if args.table:
        with open(os.path.join(ROOT, args.out)) as f:
            records = [json.loads(line) for line in f if line.strip()]
        tmp = os.path.join(ROOT, args.table + ".tmp")
        with open(tmp, "w") as f:
            f.write(table(records) + "\n")
        os.replace(tmp, os.path.join(ROOT, args.table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
