#!/usr/bin/env bash
# Runs the trainer over methods x datasets x categories x seeds, one run folder per combination:
#   $OUT/<method>/<dataset>/c<category>/s<seed>
# A run whose summary.json exists is skipped; any other is (re)started, and the trainer resumes
# it from its last checkpoint. Failures are reported and the sweep goes on; the exit status is 1
# if any run failed (2 for bad usage). Several machines can split one sweep with --shard i/n;
# --shard auto[/n] takes i from a scheduler's job array: SLURM_ARRAY_TASK_ID (minus
# SLURM_ARRAY_TASK_MIN, divided by SLURM_ARRAY_TASK_STEP; n defaults to SLURM_ARRAY_TASK_COUNT)
# or a Kubernetes Indexed Job's JOB_COMPLETION_INDEX (give n = its completions: auto/n).
#
# Usage:
#   scripts/sweep.sh --out runs/sweep --methods "rotation contrastive contrastive_da" \
#       --datasets "fmnistood cifar10ood" --categories all --seeds "1 2 3 4 5" \
#       [--shard i/n | auto[/n]] [--dry_run] [--python python] [--trainer train_and_eval_loop.py] \
#       [--no_paper_flags] [-- <extra trainer flags, e.g. --root=data --num_epoch=64>]
#
# Methods: rotation, contrastive, contrastive_da (= --method=contrastive --distaug_type=rot),
# and the Table 7 baselines rotnet and denoising (the random and ImageNet baselines are
# evaluation-only: scripts/run_baselines.sh); any other name is passed as --method=<name>
# without paper settings.
# Paper settings (spec §2 "Script settings", the reference's script/run_*.sh) are added per
# method by method_flags() unless --no_paper_flags; the flags after -- come last and so override
# them (absl keeps the last value of a repeated flag).
# --python and --trainer are split on whitespace (e.g. --python "uv run python").
# Then aggregate: python -m deep_representation_one_class.aggregate runs/sweep --seeds "1 2 3 4 5"
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
  echo "sweep.sh: $*" >&2
  echo "Run 'scripts/sweep.sh --help' for usage." >&2
  exit 2
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out=""
methods=""
datasets=""
categories="all"
seeds=""
shard="0/1"
dry_run=0
paper_flags=1
python_cmd="${PYTHON:-python}"
trainer="$repo_root/train_and_eval_loop.py"
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
      continue
      ;;
    --no_paper_flags | --no-paper-flags)
      paper_flags=0
      continue
      ;;
    --*=*)
      name="${arg%%=*}"
      value="${arg#*=}"
      ;;
    --*)
      name="$arg"
      if (($# == 0)) || [[ "$1" == --* ]]; then
        die "$arg needs a value"
      fi
      value="$1"
      shift
      ;;
    *) die "unexpected argument '$arg' (trainer flags go after --)" ;;
  esac
  case "$name" in
    --out) out="$value" ;;
    --methods) methods="$value" ;;
    --datasets) datasets="$value" ;;
    --categories) categories="$value" ;;
    --seeds) seeds="$value" ;;
    --shard) shard="$value" ;;
    --python) python_cmd="$value" ;;
    --trainer) trainer="$value" ;;
    *) die "unknown option '$name'" ;;
  esac
done

[[ -n "$out" ]] || die "--out is required (the sweep's root folder, e.g. runs/sweep)"
read -r -a method_list <<<"${methods//,/ }"
read -r -a dataset_list <<<"${datasets//,/ }"
read -r -a seed_list <<<"${seeds//,/ }"
read -r -a python_words <<<"$python_cmd"
read -r -a trainer_words <<<"$trainer"
((${#method_list[@]} > 0)) || die "--methods is required, e.g. \"rotation contrastive_da\""
((${#dataset_list[@]} > 0)) || die "--datasets is required, e.g. \"fmnistood cifar10ood\""
((${#seed_list[@]} > 0)) || die "--seeds is required, e.g. \"1 2 3 4 5\""
((${#python_words[@]} > 0)) || die "--python must name a Python interpreter"
for seed in "${seed_list[@]}"; do
  [[ "$seed" =~ ^[0-9]+$ ]] || die "--seeds must be non-negative integers, got '$seed'"
done
# --shard auto[/n]: the index (and count) from a job array's environment.
if [[ "$shard" =~ ^auto(/([0-9]+))?$ ]]; then
  count="${BASH_REMATCH[2]}"
  if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then
    id="$SLURM_ARRAY_TASK_ID" first="${SLURM_ARRAY_TASK_MIN:-0}" step="${SLURM_ARRAY_TASK_STEP:-1}"
    [[ "$id$first$step" =~ ^[0-9]+$ && "$step" -ge 1 ]] ||
      die "--shard=auto: SLURM_ARRAY_TASK_ID/MIN/STEP must be integers ('$id', '$first', '$step')"
    index=$(((id - first) / step))
    count="${count:-${SLURM_ARRAY_TASK_COUNT:-}}"
    from="SLURM_ARRAY_TASK_ID=$id"
  elif [[ -n "${JOB_COMPLETION_INDEX:-}" ]]; then
    [[ "$JOB_COMPLETION_INDEX" =~ ^[0-9]+$ ]] ||
      die "--shard=auto: JOB_COMPLETION_INDEX must be an integer, got '$JOB_COMPLETION_INDEX'"
    index="$JOB_COMPLETION_INDEX"
    from="JOB_COMPLETION_INDEX=$index"
  else
    die "--shard=auto needs SLURM_ARRAY_TASK_ID (Slurm job array) or JOB_COMPLETION_INDEX" \
      "(Kubernetes Indexed Job) in the environment; outside a job array pass --shard=i/n"
  fi
  [[ -n "$count" ]] ||
    die "--shard=auto: the number of shards is not in the environment; pass --shard=auto/N" \
      "(N = the array's size, or the Indexed Job's completions)"
  shard="$index/$count"
  echo "shard $shard (from $from)" >&2
fi
[[ "$shard" =~ ^([0-9]+)/([0-9]+)$ ]] || die "--shard must look like i/n (e.g. 0/4), got '$shard'"
shard_index="${BASH_REMATCH[1]}"
shard_count="${BASH_REMATCH[2]}"
((shard_count >= 1 && shard_index < shard_count)) ||
  die "--shard i/n needs 0 <= i < n, got '$shard'"
# A missing trainer script would fail every run; say so once instead.
if ((!dry_run && ${#trainer_words[@]} == 1)) && [[ "$trainer" == *.py && ! -f "$trainer" ]]; then
  die "trainer '$trainer' not found; pass --trainer PATH"
fi

# Inlier categories of one dataset: the --categories list, or for "all" the categories of the
# paper's table that the dataset's description lists (the plug-in catalog; standard library
# only, so it answers at once; DROC_PLUGINS datasets included).
categories_for() {
  if [[ "$categories" != "all" ]]; then
    echo "${categories//,/ }"
    return
  fi
  PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}" "${python_words[@]}" \
    -m deep_representation_one_class.catalog categories "$1" 2>/dev/null
}

# Flags that define a sweep method; always passed.
method_identity() {
  case "$1" in
    rotation) identity=(--method=rotation) ;;
    contrastive) identity=(--method=contrastive --distaug_type=1) ;;
    contrastive_da) identity=(--method=contrastive --distaug_type=rot) ;;
    *) identity=("--method=$1") ;;
  esac
}

# The paper's settings per method (the reference's script/run_{rotation,contrastive,
# contrastive_da}.sh, spec §2): ResNet-18, SGD momentum 0.9, cosine per epoch, lr 0.01, wd 3e-4,
# 2048 epochs; MLP head 8x512 (+128 for contrastive); batch 64 (rotation) / 32 (contrastive).
method_flags() {
  local aug="cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5"
  local rotations=",+rotate90,+rotate180,+rotate270"
  local common=(--net_type=resnet18 --net_width=1 --optim_type=sgd --momentum=0.9
    --sched_type=cos --sched_freq=epoch --learning_rate=0.01 --weight_decay=3e-4 --num_epoch=2048 --precision=float32)
  case "$1" in
    rotation)
      paper=("${common[@]}" --head_dims=512,512,512,512,512,512,512,512 --latent_dim=4
        --batch_size=64 "--aug_list=$aug$rotations" "--aug_list_for_test=x$rotations")
      ;;
    contrastive | contrastive_da)
      paper=("${common[@]}" --head_dims=512,512,512,512,512,512,512,512,128 --latent_dim=0
        --batch_size=32 --temperature=0.2 "--aug_list=$aug,+" --aug_list_for_test=x)
      ;;
    rotnet) # Table 7 baselines (scripts/run_baselines.sh): rotation without the MLP head,
      paper=("${common[@]}" --head_dims=none --latent_dim=4
        --batch_size=64 "--aug_list=$aug$rotations" "--aug_list_for_test=x$rotations")
      ;;
    denoising) # and the denoising autoencoder (recipes assumed, see their modules)
      paper=("${common[@]}" --head_dims=none --latent_dim=0 --batch_size=64 --aug_list=x)
      ;;
    *)
      paper=()
      return 1
      ;;
  esac
}

# Per-dataset setting of the paper: Cat-vs-Dog and CelebA are 64x64 (spec §7.3).
dataset_flags() {
  case "$1" in
    dogvscatood | dvcood | celeba) data_flags=(--input_shape=64,64,3) ;;
    *) data_flags=() ;;
  esac
}

# shellcheck source=scripts/lib.sh
source "$repo_root/scripts/lib.sh"

# All combinations, in a fixed order, so that shard membership does not depend on progress.
combos=()
for dataset in "${dataset_list[@]}"; do
  cats="$(categories_for "$dataset")" ||
    die "--categories all: no category list for dataset '$dataset'; pass --categories explicitly"
  read -r -a cat_list <<<"$cats"
  for method in "${method_list[@]}"; do
    [[ "$method" =~ ^[A-Za-z0-9_]+$ ]] || die "bad method name '$method'"
    for cat in "${cat_list[@]}"; do
      [[ "$cat" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad category '$cat' for dataset '$dataset'"
      for seed in "${seed_list[@]}"; do
        combos+=("$method $dataset $cat $seed")
      done
    done
  done
done

for method in "${method_list[@]}"; do
  if ((paper_flags)) && ! method_flags "$method"; then
    echo "sweep.sh: note: no paper settings for method '$method'; passing --method only" >&2
  fi
done

# Ctrl-C reaches the trainer too (it checkpoints and exits); then stop instead of going on.
trap 'echo "sweep.sh: interrupted" >&2; exit 130' INT

total=${#combos[@]}
ran=0
skipped=0
failed=()
mine=0
for ((index = 0; index < total; index++)); do
  ((index % shard_count == shard_index)) || continue
  mine=$((mine + 1))
  read -r method dataset cat seed <<<"${combos[index]}"
  run_dir="$out/$method/$dataset/c$cat/s$seed"
  if [[ -f "$run_dir/summary.json" ]]; then
    echo "skip $run_dir (summary.json exists)"
    skipped=$((skipped + 1))
    continue
  fi
  method_identity "$method"
  paper=()
  data_flags=()
  if ((paper_flags)); then
    method_flags "$method" || true
    dataset_flags "$dataset"
  fi
  cmd=("${python_words[@]}" "${trainer_words[@]}" "${identity[@]}" "--dataset=$dataset"
    "--category=$cat" "--seed=$seed" "--model_dir=$run_dir" "${paper[@]}" "${data_flags[@]}"
    "${extra[@]}")
  if ((dry_run)); then
    print_cmd "${cmd[@]}"
    ran=$((ran + 1))
    continue
  fi
  echo "[$((index + 1))/$total] run $run_dir"
  log="$out/logs/${method}_${dataset}_c${cat}_s${seed}.log"
  mkdir -p "$(dirname "$log")"
  status=0
  "${cmd[@]}" 2>&1 | tee -a "$log" || status=$?
  ran=$((ran + 1))
  if ((status != 0)); then
    echo "FAILED (exit $status): $run_dir; log: $log" >&2
    failed+=("$run_dir (exit $status)")
  elif [[ ! -f "$run_dir/summary.json" ]]; then
    echo "FAILED: $run_dir exited 0 but wrote no summary.json; log: $log" >&2
    failed+=("$run_dir (no summary.json)")
  fi
done

verb="ran"
if ((dry_run)); then
  verb="would run"
fi
echo "shard $shard: $mine of $total combination(s); $verb $ran, skipped $skipped," \
  "failed ${#failed[@]}"
if ((${#failed[@]} > 0)); then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
