#!/usr/bin/env bash
# Recipe selection on MVTec-layout data without real anomalies: a few short patch-level recipes
# on one category, each reporting the synthetic-anomaly validation score next to the real test
# AUROCs; the report checks that the synthetic score ranks the recipes like the real labels.
# The raw-pixel and untrained-network baselines do not depend on the method, so only the first
# recipe computes them (--baselines=false for the others).
#
# Usage:
#   scripts/defect_selection.sh --root=/path/to/mvtec_ad [--category=bottle] [--out=runs/defect_selection]
#       [--python=python] [--dry_run]
#
# Then: python -m deep_representation_one_class.reports.selection <out> --out results/defect_selection
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root=""
category="bottle"
out="runs/defect_selection"
python_cmd="${PYTHON:-python}"
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --root=*) root="${arg#*=}" ;;
    --category=*) category="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --python=*) python_cmd="${arg#*=}" ;;
    --dry_run) dry_run=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "defect_selection.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
[[ -n "$root" ]] || { echo "defect_selection.sh: --root is required" >&2; exit 2; }
# shellcheck source=lib.sh
source "$repo_root/scripts/lib.sh"

common=(--dataset=mvtec "--category=$category" "--root=$root" --patch_stride=16 --patch_bank=4000)
recipes=(
  "contrastive_300|--method=contrastive --train_steps=300"
  "cutpaste3_300|--method=cutpaste --train_steps=300 --baselines=false"
  "cutpaste2_300|--method=cutpaste --cutpaste_variant=binary --train_steps=300 --baselines=false"
  "rotation_300|--method=rotation --train_steps=300 --baselines=false"
  "contrastive_1000|--method=contrastive --train_steps=1000 --baselines=false"
  "contrastive_1500|--method=contrastive --train_steps=1500 --baselines=false"
  "cutpaste3_1000|--method=cutpaste --train_steps=1000 --baselines=false"
)
status=0
for recipe in "${recipes[@]}"; do
  name="${recipe%%|*}"
  read -r -a flags <<< "${recipe#*|}"
  cmd=(nice -n 10 "$python_cmd" "$repo_root/train_and_eval_loop.py" "${common[@]}" "${flags[@]}"
       "--model_dir=$out/$name")
  print_cmd "${cmd[@]}"
  if (( ! dry_run )); then
    "${cmd[@]}" > "$out/$name.log" 2>&1 || { echo "recipe $name failed (see $out/$name.log)" >&2; status=1; }
  fi
done
exit $status
