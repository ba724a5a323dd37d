#!/usr/bin/env bash
# MVTec AD (spec §9.3, §13.2): patch-level representation learning, image-level detection and
# pixel-level localisation, one run per category, then a per-category table with the mean.
#
# Paper, mean over the 15 categories (detection = image AUROC / localisation = pixel AUROC):
#   contrastive + DA (DisAug CLR) 86.5 / 90.4;  rotation prediction (RotNet, MLP head) 86.3 / 93.0.
# Expected time with the CPU defaults below: about 12 minutes per category on 2 CPU cores
# (3 hours for all 15); see docs/defects.md.
#
# Usage:
#   scripts/run_mvtec.sh --root=/path/to/mvtec_ad [--category=all | --category="bottle cable"]
#       [--method=contrastive|contrastive_da|rotation] [--out=runs/mvtec] [--seed=0]
#       [--python=python] [--dry_run] [-- <extra trainer flags, e.g. --num_epoch=64>]
#
# Run folders: <out>/<method>/mvtec/c<category>/s<seed>; a finished run is not retrained (the
# trainer prints its stored results), an interrupted one resumes from its last checkpoint.
# The table goes to <out>/<method>/mvtec_report.{md,csv}
# (python -m deep_representation_one_class.reports.mvtec_table <out>/<method>).
# Failures are reported and the sweep goes on; the exit status is 1 if any category failed.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
  echo "run_mvtec.sh: $*" >&2
  echo "Run 'scripts/run_mvtec.sh --help' for usage." >&2
  exit 2
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
all_categories="carpet grid leather tile wood bottle cable capsule hazelnut metal_nut pill screw toothbrush transistor zipper"
root=""
categories="all"
method="contrastive"
out="runs/mvtec"
seed=0
python_cmd="${PYTHON:-python}"
dry_run=0
extra=()

while (($# > 0)); do
  arg="$1"
  shift
  case "$arg" in
    --)
      extra=("$@")
      break
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    --dry_run | --dry-run)
      dry_run=1
      ;;
    --root=*) root="${arg#*=}" ;;
    --category=* | --categories=*) categories="${arg#*=}" ;;
    --method=*) method="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --seed=*) seed="${arg#*=}" ;;
    --python=*) python_cmd="${arg#*=}" ;;
    *) die "unexpected argument '$arg' (options look like --name=value; trainer flags go after --)" ;;
  esac
done

[[ -n "$root" ]] || die "--root=<folder holding the MVTec AD category folders> is required"
[[ -d "$root" ]] || die "--root folder '$root' does not exist"
[[ "$seed" =~ ^[0-9]+$ ]] || die "--seed must be a non-negative integer, got '$seed'"

# Method -> trainer flags. The CPU defaults for patches (see docs/defects.md): a width-0.25
# ResNet-18 on 32x32 patches, batch 32, 1500 steps, test stride 8, a 10k-patch bank.
case "$method" in
  contrastive) method_flags=(--method=contrastive) ;;
  contrastive_da) method_flags=(--method=contrastive --distaug_type=rot) ;;
  rotation) method_flags=(--method=rotation) ;;
  *) die "unknown --method '$method'; valid: contrastive, contrastive_da, rotation" ;;
esac
patch_flags=(--input_shape=256,256,3 --patch_size=32 --patch_stride=8 --patch_bank=10000
  --patch_agg=max --smooth_sigma=4 --net_type=resnet18 --net_width=0.25 --batch_size=32
  --num_epoch=15 --num_batch=100 --learning_rate=0.01 --classifiers=gde,kde,auc --precision=float32)

if [[ "$categories" == "all" ]]; then
  categories="$all_categories"
fi
categories="${categories//,/ }"
for c in $categories; do
  [[ " $all_categories " == *" $c "* ]] || die "unknown category '$c'; valid: all or any of: $all_categories"
done

read -r -a py <<<"$python_cmd"
failed=()
for c in $categories; do
  run_dir="$out/$method/mvtec/c$c/s$seed"
  cmd=("${py[@]}" "$repo_root/train_and_eval_loop.py" --dataset=mvtec "--category=$c"
    "--root=$root" "--seed=$seed" "--model_dir=$run_dir" "${method_flags[@]}" "${patch_flags[@]}"
    ${extra[@]+"${extra[@]}"})
  echo "== $method / $c -> $run_dir"
  if ((dry_run)); then
    printf '%q ' "${cmd[@]}"
    echo
    continue
  fi
  start=$SECONDS
  if "${cmd[@]}"; then
    echo "== $c done in $((SECONDS - start)) s"
  else
    echo "== $c FAILED (exit $?) after $((SECONDS - start)) s" >&2
    failed+=("$c")
  fi
done

if ((!dry_run)); then
  "${py[@]}" -m deep_representation_one_class.reports.mvtec_table "$out/$method" \
    --out "$out/$method/mvtec_report"
  cat "$out/$method/mvtec_report.md"
fi
if ((${#failed[@]})); then
  echo "failed categories: ${failed[*]}" >&2
  exit 1
fi
