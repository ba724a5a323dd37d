"""``bench --summarize``: a Markdown table of the medians per case of a benchmark JSONL file."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from deep_representation_one_class.benchmarks.cases import BenchError

__all__ = ["summarize"]


def summarize(path: str) -> str:
    """A Markdown table of the medians per case over every record in a JSONL file.

    Each command run is one round (the reference case first); speed-ups are the medians of the
    per-round ratios, so a round measured at another load still compares like with like.
    """
    try:
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise BenchError(f"--summarize={path}: not a benchmark JSONL file ({e})") from None
    if not records:
        raise BenchError(f"--summarize={path}: no records")
    # One row per case, ISA and allocator (older records lack the last two).
    by_case: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        isa = r.get("isa") or {}
        label = isa.get("name", "") + (" (emulated)" if isa.get("emulated") else "")
        alloc = (r.get("allocator") or {}).get("allocator", "")
        by_case.setdefault((r["case"], label, alloc), []).append(r)

    def med(rows: list[dict[str, Any]], *keys: str) -> float | None:
        vals = []
        for r in rows:
            v: Any = r
            for k in keys:
                v = v.get(k) if isinstance(v, dict) else None
            if v is not None:
                vals.append(float(v))
        return float(np.median(vals)) if vals else None

    def cell(v: float | None, fmt: str, unit: str = "") -> str:
        return "–" if v is None else format(v, fmt) + unit

    lines = [
        "| case | rounds | train img/s | vs ref | % bf16 peak | extract img/s | vs ref "
        "| eval s | vs ref | load | ISA | allocator | case CPU s user / system |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (case, isa, alloc), rows in by_case.items():
        user, system = med(rows, "cpu_user_s"), med(rows, "cpu_system_s")
        cpu = "–" if user is None else f"{user:.1f} / {system:.1f}"
        lines.append(
            f"| {case} | {len(rows)} "
            f"| {cell(med(rows, 'train_images_per_s'), '.0f')} "
            f"| {cell(med(rows, 'vs_reference', 'train'), '.2f', 'x')} "
            f"| {cell(med(rows, 'pct_of_peak', 'bfloat16'), '.0f', '%')} "
            f"| {cell(med(rows, 'extract_images_per_s'), '.0f')} "
            f"| {cell(med(rows, 'vs_reference', 'extract'), '.2f', 'x')} "
            f"| {cell(med(rows, 'eval_seconds_estimate'), '.1f')} "
            f"| {cell(med(rows, 'vs_reference', 'eval'), '.2f', 'x')} "
            f"| {cell(float(np.median([r['loadavg_start'][0] for r in rows])), '.1f')} "
            f"| {isa or '–'} | {alloc or '–'} | {cpu} |"
        )
    return "\n".join(lines)
