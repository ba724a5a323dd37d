#!/usr/bin/env bash
# The baselines of Table 7 for one dataset/category, one run folder each:
#   $OUT/<baseline>/<dataset>/c<category>/s<seed>
# Paper numbers, CIFAR-10 mean over 10 classes (pool features; Table 7, spec §9.1):
#   random    ResNet-18 (random):   OC-SVM kernel 61.2 ± 2.3, KDE 60.5 ± 2.4 (f-MNIST 89.8/89.4)
#   imagenet  ResNet-50 (ImageNet): OC-SVM kernel 80.0, KDE 80.0 (f-MNIST 91.8/90.5)
#   rotnet    RotNet:               rotation classifier 86.8 ± 0.4, KDE 89.3 ± 0.3
#   denoising Denoising AE:         OC-SVM kernel 83.4 ± 1.0, KDE 83.5 ± 1.0
# Recipes: "random" evaluates the untrained ResNet-18 (--num_epoch=0); "imagenet" evaluates
# frozen ResNet-50 features from a local weights file (--imagenet_weights=PATH, Keras's
# resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5; skipped with a note when not given);
# "rotnet" is scripts/run_rotation.sh without the MLP head; "denoising" trains the ResNet-18
# encoder + decoder with the same optimizer, L2 and epochs. The paper does not give the
# RotNet and denoising recipes; these are our assumptions (see methods/rotnet.py, denoising.py).
# Cost: imagenet is evaluation only but runs ResNet-50 at 224x224 on every classifier-train and
# test image (15,000 for a CIFAR-10 class): minutes on a GPU, tens of minutes on a 2-core CPU.
#
# Usage:
#   scripts/run_baselines.sh --dataset=cifar10ood --category=0 [--root=DATA] \
#       [--out=runs/baselines] [--seeds="1 2 3 4 5"] [--baselines="random rotnet"] \
#       [--imagenet_weights=PATH] [any other trainer flag]
# Other flags go to every trainer run after the recipe's, so they override it (absl keeps the
# last value), except that random and imagenet always get --num_epoch=0. imagenet runs for the
# first seed only (its features are deterministic). A failed run is reported and the others go
# on; the exit status is 1 if any failed. Aggregate with
#   python -m deep_representation_one_class.aggregate runs/baselines --out results/baselines
# Environment: PYTHON (default python; split on spaces), DRY_RUN=1 prints the commands only,
# IMAGENET_WEIGHTS (default of --imagenet_weights).
set -euo pipefail

die() {
  echo "run_baselines.sh: $*" >&2
  exit 2
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
read -r -a python_cmd <<<"${PYTHON:-python}"
out="runs/baselines"
seeds="1"
baselines="random imagenet rotnet denoising"
dataset="cifar10ood"
category="0"
weights="${IMAGENET_WEIGHTS:-}"
extra=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    --out=*) out="${arg#*=}" ;;
    --seeds=*) seeds="${arg#*=}" ;;
    --baselines=*) baselines="${arg#*=}" ;;
    --dataset=*) dataset="${arg#*=}" ;;
    --category=*) category="${arg#*=}" ;;
    --imagenet_weights=*) weights="${arg#*=}" ;;
    --model_dir=* | --model_dir) die "use --out=DIR (each baseline gets DIR/<baseline>/...)" ;;
    --out | --seeds | --baselines | --dataset | --category | --imagenet_weights)
      die "write $arg=VALUE (one word)"
      ;;
    *) extra+=("$arg") ;;
  esac
done
read -r -a seed_list <<<"${seeds//,/ }"
read -r -a baseline_list <<<"${baselines//,/ }"
((${#seed_list[@]} > 0)) || die "--seeds is empty"
[[ "$category" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad --category '$category'"

aug="cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5"
rotations=",+rotate90,+rotate180,+rotate270"
common=(--net_type=resnet18 --net_width=1 --optim_type=sgd --momentum=0.9
  --sched_type=cos --sched_freq=epoch --learning_rate=0.01 --weight_decay=3e-4 --num_epoch=2048 --precision=float32)

# Sets recipe (flags before the user's) and forced (flags after them) for baseline $1.
recipe_for() {
  forced=()
  case "$1" in
    random)
      recipe=(--method=contrastive --net_type=resnet18 --net_width=1 --head_dims=none)
      forced=(--num_epoch=0)
      ;;
    imagenet)
      recipe=(--method=imagenet "--imagenet_weights=$weights" --net_type=resnet50 --net_width=1
        --eval_batch_size=64)
      forced=(--num_epoch=0)
      ;;
    rotnet)
      recipe=(--method=rotnet "${common[@]}" --head_dims=none --latent_dim=4 --batch_size=64
        "--aug_list=$aug$rotations" "--aug_list_for_test=x$rotations")
      ;;
    denoising)
      recipe=(--method=denoising "${common[@]}" --head_dims=none --latent_dim=0 --batch_size=64
        --aug_list=x)
      ;;
    *) return 1 ;;
  esac
}

# shellcheck source=scripts/lib.sh
source "$repo_root/scripts/lib.sh"

failed=()
for baseline in "${baseline_list[@]}"; do
  recipe_for "$baseline" || die "unknown baseline '$baseline'; valid: random imagenet rotnet denoising"
  if [[ "$baseline" == imagenet && -z "$weights" ]]; then
    echo "run_baselines.sh: skip imagenet: pass --imagenet_weights=PATH (a local Keras ResNet50" \
      "no-top weights file; nothing is downloaded)" >&2
    continue
  fi
  for seed in "${seed_list[@]}"; do
    run_dir="$out/$baseline/$dataset/c$category/s$seed"
    cmd=("${python_cmd[@]}" "$repo_root/train_and_eval_loop.py" "${recipe[@]}"
      "--dataset=$dataset" "--category=$category" "--seed=$seed" "--model_dir=$run_dir"
      ${extra[@]+"${extra[@]}"} ${forced[@]+"${forced[@]}"})
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
      print_cmd "${cmd[@]}"
    else
      echo "run $run_dir"
      "${cmd[@]}" || failed+=("$run_dir (exit $?)")
    fi
    [[ "$baseline" != imagenet ]] || break
  done
done

if ((${#failed[@]} > 0)); then
  printf 'run_baselines.sh: failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
