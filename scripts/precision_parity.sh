#!/usr/bin/env bash
# Reduced-precision AUROC check: the Fashion-MNIST main job
# (`python train_and_eval_loop.py --method=contrastive`, class 0, quick defaults) trained with the
# same seeds in float32, in mixed bfloat16 (default: the last ResNet stage, conv5, stays
# float32) and in mixed bfloat16 for the whole trunk (--float32_stages=); the all-bfloat16 runs
# are also re-extracted in float32
# (`python -m deep_representation_one_class.evaluate --reextract --precision=float32`). Every
# run evaluates in its training precision (--eval_precision=train; the trainer's default is
# float32 evaluation whatever it trained in), which is what the comparison is about. Then a
# paired table per classifier: mean, SD and the mean paired difference to float32.
#
# Usage:
#   scripts/precision_parity.sh [--seeds="0 1 2 3"] [--out=runs/precision_parity]
#       [--results=results/precision_parity.md] [--dry_run] [trainer flags...]
# Finished runs are skipped, so an interrupted check resumes where it stopped. Trainer flags
# (e.g. --num_epoch=1 --num_batch=5 for a smoke run) go to every training run.
# Environment: PYTHON (default python; split on spaces).
set -euo pipefail

die() {
  echo "precision_parity.sh: $*" >&2
  exit 2
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$repo_root/scripts/lib.sh"
read -r -a python_cmd <<<"${PYTHON:-python}"
out="runs/precision_parity"
results="results/precision_parity.md"
seeds="0 1 2 3"
dry_run=0
extra=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    --out=*) out="${arg#*=}" ;;
    --results=*) results="${arg#*=}" ;;
    --seeds=*) seeds="${arg#*=}" ;;
    --dry_run | --dry-run) dry_run=1 ;;
    --out | --results | --seeds) die "write $arg=VALUE (one word)" ;;
    --model_dir=* | --precision=* | --eval_precision=* | --seed=* | --float32_stages=*)
      die "$arg is set by the script"
      ;;
    *) extra+=("$arg") ;;
  esac
done
for s in $seeds; do
  [[ "$s" =~ ^[0-9]+$ ]] || die "--seeds must be non-negative integers, got '$s'"
done
[[ "$out" == /* ]] || out="$PWD/$out"
[[ "$results" == /* ]] || results="$PWD/$results"

run() {
  print_cmd "$@"
  ((dry_run)) || "$@"
}

# variant name -> trainer flags
variants=(float32 mixed_bfloat16 mixed_bfloat16_all)
declare -A variant_flags=(
  [float32]="--precision=float32"
  [mixed_bfloat16]="--precision=mixed_bfloat16"
  [mixed_bfloat16_all]="--precision=mixed_bfloat16 --float32_stages="
)
for seed in $seeds; do
  for variant in "${variants[@]}"; do
    dir="$out/$variant/s$seed"
    if [[ -f "$dir/summary.json" ]] && grep -q '"complete": true' "$dir/summary.json"; then
      echo "done: $dir"
    else
      read -r -a flags <<<"${variant_flags[$variant]}"
      run "${python_cmd[@]}" "$repo_root/train_and_eval_loop.py" --method=contrastive \
        --seed="$seed" "${flags[@]}" --eval_precision=train --model_dir="$dir" \
        ${extra[@]+"${extra[@]}"}
    fi
  done
  # The all-bfloat16 weights, features extracted in float32 (a copy, so that the bfloat16 run
  # keeps its own summary).
  src="$out/mixed_bfloat16_all/s$seed"
  dst="$out/mixed_bfloat16_all_eval_float32/s$seed"
  if [[ -f "$dst/summary.json" ]] && grep -q '"eval_precision": "float32"' "$dst/summary.json"; then
    echo "done: $dst"
  else
    run rm -rf "$dst"
    run mkdir -p "$(dirname "$dst")"
    run cp -r "$src" "$dst"
    run "${python_cmd[@]}" -m deep_representation_one_class.evaluate --model_dir="$dst" \
      --reextract --precision=float32
  fi
done
((dry_run)) && exit 0

(cd "$repo_root" && "${python_cmd[@]}" - "$out" "$results" "$seeds" <<'PY')
import json
import math
import os
import statistics
import sys

out, results, seeds = sys.argv[1], sys.argv[2], sys.argv[3].split()
variants = (
    "float32",
    "mixed_bfloat16",
    "mixed_bfloat16_all",
    "mixed_bfloat16_all_eval_float32",
)
wanted = ("pool.gde", "pool.kde", "pool.kocsvm", "pool.auc", "embed.gde", "embed.kde")
runs = {}
for v in variants:
    for s in seeds:
        path = os.path.join(out, v, f"s{s}", "summary.json")
        if os.path.exists(path):
            runs[v, s] = json.load(open(path))
paired = [s for s in seeds if all((v, s) in runs for v in variants)]
if not paired:
    sys.exit("precision_parity.sh: no seed has all four runs; nothing to tabulate")
keys = [k for k in wanted if all(k in runs[v, s]["metrics"] for v in variants for s in paired)]


def fmt(xs):
    m = statistics.fmean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
    return f"{m:.2f} ± {sd:.2f}"


lines = [
    "# Reduced-precision AUROC check (Fashion-MNIST class 0, contrastive quick defaults)",
    "",
    f"Produced by `scripts/precision_parity.sh --seeds=\"{' '.join(seeds)}\"`; "
    f"{len(paired)} paired seeds ({', '.join(paired)}). AUROC x 100, mean ± SD over seeds; "
    "Δ = mean paired difference to float32 (same seed) ± its standard error.",
    "",
    "bf16 = mixed bfloat16 with conv5 in float32 (the default of --precision=mixed_bfloat16); "
    "all-bf16 = the whole trunk in bfloat16 (--float32_stages=); the last column re-extracts "
    "the all-bf16 weights in float32.",
    "",
    "| classifier | float32 | bf16 | Δ | all-bf16 | Δ | all-bf16, float32 extraction | Δ |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
]
for k in keys:
    base = [runs["float32", s]["metrics"][k] for s in paired]
    cells = [fmt(base)]
    for v in variants[1:]:
        vals = [runs[v, s]["metrics"][k] for s in paired]
        diff = [a - b for a, b in zip(vals, base)]
        se = statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        cells += [fmt(vals), f"{statistics.fmean(diff):+.2f} ± {se:.2f}"]
    lines.append(f"| {k} | " + " | ".join(cells) + " |")
secs = {
    v: statistics.fmean(runs[v, s]["run"].get("train_seconds", float("nan")) for s in paired)
    for v in variants[:3]
}
lines += [
    "",
    f"Mean training time per run: float32 {secs['float32']:.0f} s, "
    f"bf16 {secs['mixed_bfloat16']:.0f} s, all-bf16 {secs['mixed_bfloat16_all']:.0f} s "
    "(wall clock, includes the machine's other load).",
]
tmp = results + ".tmp"
os.makedirs(os.path.dirname(results) or ".", exist_ok=True)
with open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
os.replace(tmp, results)
print("\n".join(lines))
PY
