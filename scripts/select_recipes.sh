#!/usr/bin/env bash
# Recipe selection on validation splits (--is_validation: 90% of the training inliers train, the
# other 10% plus as many training images of other classes are the validation set; the test set
# is never read). Each plan is a list of recipes (a sweep method + trainer flags) run over a
# few categories; the runs go to <out>/<plan>/<recipe>/<method>/<dataset>/c<cat>/s<seed>
# (scripts/sweep.sh, so finished runs are skipped and interrupted ones resume), then
# scripts/selection_table.py writes <results>/<plan>.{md,csv}: per recipe and classifier the
# validation AUROC of each category and their mean.
#
# Plans:
#   fmnist        Fashion-MNIST classes 0 and 6 (shirt, the hardest): the bare contrastive
#                 defaults (750 steps, --precision=auto), contrastive 1250 steps, and the CPU
#                 preset's rotation recipe (1500 steps of 32 x 4, float32).
#   budget_small  a 500-image folder (--root, e.g. from scripts/make_folder_subset.py) and
#   budget_large  a 5,000-image folder (--root, e.g. the CIFAR-10 JPEG copy), one category
#                 (--category, default ship): the bare contrastive defaults (750 steps) against
#                 375 and 1500 steps. These go to <plan>_<category> folders and tables.
#   pretrained_cifar10  CIFAR-10 classes 3 and 8 (cat and ship, the weakest from scratch;
#                 --root with cifar-10-batches-py): frozen ImageNet EfficientNet-Lite0 features
#                 (--method=imagenet) with the 32-px images fed at 96 and at 128 px, every
#                 classifier, and the raw-pixel / untrained-network baselines.
#   mean_shifted_cifar10  CIFAR-10 class 3 (cat; --root with cifar-10-batches-py): fine-tuning
#                 the ImageNet EfficientNet-Lite0 with the mean-shifted contrastive loss
#                 (--method=mean_shifted, 128 px) for 150 steps of 32 pairs at learning rates
#                 3e-5 and 1e-4, evaluated every 75 steps (compare: lite0_128 of
#                 pretrained_cifar10, the frozen features).
#
# Usage:
#   scripts/select_recipes.sh --plan=fmnist [--out=runs/selection] [--results=results/selection]
#       [--root=DIR] [--category=NAME] [--seeds="0"] [--dry_run] [trainer flags...]
# Environment: PYTHON (default python).
set -euo pipefail

die() {
  echo "select_recipes.sh: $*" >&2
  exit 2
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
plan=""
out="runs/selection"
results="results/selection"
root=""
category="ship"
seeds="0"
dry_run=()
extra=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    --plan=*) plan="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --results=*) results="${arg#*=}" ;;
    --root=*) root="${arg#*=}" ;;
    --category=*) category="${arg#*=}" ;;
    --seeds=*) seeds="${arg#*=}" ;;
    --dry_run | --dry-run) dry_run=(--dry_run) ;;
    --is_validation* | --model_dir=*) die "$arg is fixed by the selection" ;;
    *) extra+=("$arg") ;;
  esac
done

case "$plan" in
  fmnist)
    dataset="fmnistood" categories="0 6"
    recipes=("contrastive_750|contrastive|"
      "contrastive_1250|contrastive|--train_steps=1250"
      "rotation_1500_f32|rotation|--train_steps=1500 --precision=float32")
    ;;
  budget_small | budget_large)
    [[ -n "$root" ]] || die "--plan=$plan needs --root (an image folder with train/ and test/)"
    [[ "$category" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad --category '$category'"
    [[ -d "$root/train/$category" ]] || die "--root $root has no train/$category folder"
    dataset="folder" categories="$category"
    plan="${plan}_$category"
    extra=("--root=$root" "--input_shape=32,32,3" ${extra[@]+"${extra[@]}"})
    recipes=("contrastive_375|contrastive|--train_steps=375"
      "contrastive_750|contrastive|"
      "contrastive_1500|contrastive|--train_steps=1500")
    ;;
  pretrained_cifar10)
    [[ -n "$root" ]] || die "--plan=$plan needs --root (a folder with cifar-10-batches-py)"
    dataset="cifar10ood" categories="3 8"
    extra=("--root=$root" ${extra[@]+"${extra[@]}"})
    recipes=("lite0_96|imagenet|--backbone=efficientnet_lite0 --pretrained_size=96 --baselines"
      "lite0_128|imagenet|--backbone=efficientnet_lite0 --pretrained_size=128")
    ;;
  mean_shifted_cifar10)
    [[ -n "$root" ]] || die "--plan=$plan needs --root (a folder with cifar-10-batches-py)"
    dataset="cifar10ood" categories="3"
    extra=("--root=$root" ${extra[@]+"${extra[@]}"})
    common="--train_steps=150 --num_batch=75 --eval_every=1 --classifiers=gde,auc,kde --report=false"
    recipes=("msc_lr3e-5|mean_shifted|$common --learning_rate=3e-5"
      "msc_lr1e-4|mean_shifted|$common --learning_rate=1e-4")
    ;;
  "") die "--plan is required (fmnist, budget_small, budget_large, pretrained_cifar10 or mean_shifted_cifar10)" ;;
  *) die "unknown --plan '$plan' (fmnist, budget_small, budget_large, pretrained_cifar10 or mean_shifted_cifar10)" ;;
esac

status=0
for recipe in "${recipes[@]}"; do
  IFS="|" read -r name method flags <<<"$recipe"
  read -r -a recipe_flags <<<"$flags"
  bash "$repo_root/scripts/sweep.sh" --out "$out/$plan/$name" --methods "$method" \
    --datasets "$dataset" --categories "$categories" --seeds "$seeds" --no_paper_flags \
    --python "${PYTHON:-python}" ${dry_run[@]+"${dry_run[@]}"} -- --is_validation \
    ${recipe_flags[@]+"${recipe_flags[@]}"} ${extra[@]+"${extra[@]}"} || status=$?
done
if ((${#dry_run[@]} == 0)); then
  read -r -a python_cmd <<<"${PYTHON:-python}"
  "${python_cmd[@]}" "$repo_root/scripts/selection_table.py" "$out/$plan" \
    --out "$results/$plan" --title "Validation selection: $plan" || status=$?
fi
exit "$status"
