#!/usr/bin/env bash
# MVTec AD with the bare --dataset=mvtec defaults (PatchCore-style frozen ImageNet
# EfficientNet-Lite0 window features, offline): one run per category, then the per-category
# image AUROC / pixel AUROC / PRO table (1-NN, the default scorer), each run's rows next to its
# baselines (raw pixels, untrained network, the from-scratch recipe trained --scratch_steps
# steps) and the CPU minutes per run.
#
# Usage:
#   scripts/pretrained_mvtec.sh --root=DIR [--categories="bottle"] [--out=runs/pretrained_mvtec]
#       [--results=results/pretrained_mvtec] [trainer flags...]
# Run folders: <out>/patchcore/mvtec/c<category>/s0. A finished run is not redone (the trainer
# prints its stored results). Environment: PYTHON (default python).
set -euo pipefail

die() {
  echo "pretrained_mvtec.sh: $*" >&2
  exit 2
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
read -r -a python_cmd <<<"${PYTHON:-python}"
root=""
categories="bottle"
out="runs/pretrained_mvtec"
results="results/pretrained_mvtec"
extra=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    --root=*) root="${arg#*=}" ;;
    --categories=*) categories="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --results=*) results="${arg#*=}" ;;
    --model_dir=* | --dataset=* | --category=*) die "$arg is set by the script" ;;
    *) extra+=("$arg") ;;
  esac
done
[[ -n "$root" ]] || die "--root=DIR is required (the folder holding <category>/train/good)"
status=0
for category in ${categories//,/ }; do
  run="$out/patchcore/mvtec/c$category/s0"
  "${python_cmd[@]}" "$repo_root/train_and_eval_loop.py" --dataset=mvtec "--root=$root" \
    "--category=$category" "--model_dir=$run" ${extra[@]+"${extra[@]}"} || status=$?
done
"${python_cmd[@]}" -m deep_representation_one_class.reports.mvtec_table "$out" --key pool.auc \
  --out "$results" || status=$?
# Per run: the run's row next to its baselines (image AUROC, pixel AUROC, PRO, synthetic-anomaly
# AUROC), and the CPU minutes (train + evaluation, this process's CPU time over all threads; the
# from-scratch baseline's share separately), appended to the table with the machine it ran on.
"${python_cmd[@]}" - "$out" "$results.md" <<'PY' || status=$?
import glob, json, os, sys

from deep_representation_one_class.utils.cpuinfo import machine_line

from deep_representation_one_class.reports.baseline_rows import label, row_prefixes

KEY = "pool.auc"
lines = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "**", "summary.json"), recursive=True)):
    s = json.load(open(path))
    r, b, m = s["run"], s.get("backbone", {}), s.get("metrics", {})
    cpu = (r.get("train_cpu_seconds", 0) + r.get("eval_cpu_seconds", 0)) / 60
    wall = (r.get("train_seconds", 0) + r.get("eval_seconds", 0)) / 60
    name = os.path.relpath(os.path.dirname(path), sys.argv[1])
    scratch = s.get("baseline_scratch")
    lines.append(
        f"- {name}: backbone {b.get('name')} "
        f"({b.get('weights', {}).get('package')} {b.get('weights', {}).get('version')}, "
        f"sha256 {b.get('weights', {}).get('sha256', '')[:12]}..., {b.get('precision')}), "
        f"{cpu:.1f} CPU-min, {wall:.1f} wall-min"
        + (
            f"; of which the from-scratch baseline ({scratch['method']}, "
            + (
                "no distribution augmentation"
                if str(scratch["distaug_type"]) in ("", "1", "none")
                else f"distribution augmentation {scratch['distaug_type']}"
            )
            + f", {scratch['train_steps']} steps of "
            f"{scratch['batch_size']}, {scratch['net_type']} width {scratch['net_width']:g}, "
            f"{scratch['precision']}) {scratch['cpu_seconds'] / 60:.1f} CPU-min "
            f"(training {scratch['train_cpu_seconds'] / 60:.1f}), "
            f"{scratch['seconds'] / 60:.1f} wall-min"
            if scratch
            else ""
        )
    )
    feature, _, scorer = KEY.rpartition(".")
    rows = [(f"{s['config']['method']} ({KEY})", KEY)]
    for n, p in row_prefixes(m, feature):
        if p.startswith("baseline_scratch") and scratch:
            n = f"{n}, {scratch['method']} {scratch['train_steps']} steps"
        rows.append((label(n), f"{p}.{scorer}"))

    def cell(key):
        v = m.get(key)
        return "–" if v is None else f"{v:.1f}"

    lines += ["", f"| {name} | image AUROC | pixel AUROC | PRO | synthetic |"]
    lines.append("|---|---|---|---|---|")
    for row, key in rows:
        cells = [cell(key + k) for k in (".image_auroc", ".pixel_auroc", ".pro")]
        lines.append(f"| {row} | {' | '.join(cells)} | {cell('synthetic.' + key)} |")
    lines.append("")
note = (
    "\n## Runs\n\nBare `--dataset=mvtec` defaults (PatchCore-style, frozen ImageNet "
    "EfficientNet-Lite0, 1-NN on a 10% coreset of 10,000 training windows), with the "
    "baselines scored by the same 1-NN protocol on a 4,000-window bank at stride 16: raw "
    "pixels, the untrained network and the from-scratch recipe (contrastive learning on random "
    "32-px patches, `--scratch_steps` steps; docs/pretrained.md). Command: "
    f"`scripts/pretrained_mvtec.sh --root=DIR`. Machine: {machine_line()} when the table "
    "was written (wall minutes depend on it, CPU minutes much less).\n\n"
    + "\n".join(lines)
    + "\n"
)
print(note)
with open(sys.argv[2], "a") as f:
    f.write(note)
PY
exit "$status"
