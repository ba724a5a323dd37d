#!/usr/bin/env bash
# A folder of photos with the bare --dataset=folder defaults (frozen ImageNet EfficientNet-Lite2
# at 224 px, offline), timed: a small folder made from a {train,test}/<class>/ image folder
# (scripts/make_folder_subset.py: --per_class training and --test_per_class test images of every
# class, by symbolic links), one bare run on --category (the other test classes are the
# anomalies), then the aggregated table (the run's classifiers next to its raw-pixel,
# untrained-network and from-scratch rows) and the CPU minutes of the run and of its
# from-scratch row.
#
# Usage:
#   scripts/pretrained_folder.sh --root=DIR [--category=ship] [--per_class=500]
#       [--test_per_class=50] [--out=runs/pretrained_folder]
#       [--results=results/pretrained_folder] [trainer flags...]
# The folder goes to <out>/data (kept and reused), the run to <out>/runs/imagenet/folder/
# c<category>/s0; a finished run is not redone (the trainer prints its stored results).
# Environment: PYTHON (default python).
set -euo pipefail

die() {
  echo "pretrained_folder.sh: $*" >&2
  exit 2
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
read -r -a python_cmd <<<"${PYTHON:-python}"
root=""
category="ship"
per_class=500
test_per_class=50
out="runs/pretrained_folder"
results="results/pretrained_folder"
extra=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    --root=*) root="${arg#*=}" ;;
    --category=*) category="${arg#*=}" ;;
    --per_class=*) per_class="${arg#*=}" ;;
    --test_per_class=*) test_per_class="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --results=*) results="${arg#*=}" ;;
    --model_dir=* | --dataset=*) die "$arg is set by the script" ;;
    *) extra+=("$arg") ;;
  esac
done
[[ -n "$root" ]] || die "--root=DIR is required (a folder with train/<class>/ and test/<class>/)"
data="$out/data"
if [[ ! -d "$data" ]]; then
  "${python_cmd[@]}" "$repo_root/scripts/make_folder_subset.py" --root "$root" --out "$data" \
    --per_class "$per_class" --test_per_class "$test_per_class"
fi
status=0
"${python_cmd[@]}" "$repo_root/train_and_eval_loop.py" --dataset=folder "--root=$data" \
  "--category=$category" "--model_dir=$out/runs/imagenet/folder/c$category/s0" \
  ${extra[@]+"${extra[@]}"} || status=$?
note="A folder of photos, bare \`--dataset=folder\` defaults (frozen ImageNet EfficientNet-Lite2 \
at 224 px, layers s16+b14+b15+head, all classifiers), with the raw-pixel, untrained-network and from-scratch baseline \
rows (docs/pretrained.md). Data: CIFAR-10 JPEG q75 copy when --root is ../shared/data/cifar10-jpeg; \
$per_class training images of the category, $test_per_class test images of every class. \
Command: \`scripts/pretrained_folder.sh --root=DIR --category=$category\`."
"${python_cmd[@]}" -m deep_representation_one_class.aggregate "$out/runs" --out "$results" \
  --overwrite --note "$note" || status=$?
# CPU minutes of the run and of its from-scratch row (this process's CPU time over all threads),
# appended with the machine it ran on.
"${python_cmd[@]}" - "$out/runs" "$results.md" <<'PY' || status=$?
import glob, json, os, sys

from deep_representation_one_class.utils.cpuinfo import machine_line

lines = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "**", "summary.json"), recursive=True)):
    s = json.load(open(path))
    r, b = s["run"], s.get("backbone", {})
    cpu = (r.get("train_cpu_seconds", 0) + r.get("eval_cpu_seconds", 0)) / 60
    wall = (r.get("train_seconds", 0) + r.get("eval_seconds", 0)) / 60
    line = (
        f"- {os.path.relpath(os.path.dirname(path), sys.argv[1])}: backbone {b.get('name')} at "
        f"{b.get('input_size', s['config']['input_shape'][0])} px, {cpu:.1f} CPU-min, "
        f"{wall:.1f} wall-min"
    )
    scratch = s.get("baseline_scratch")
    if scratch:
        line += (
            f"; of which the from-scratch row ({scratch['method']}, distribution augmentation "
            f"{scratch['distaug_type']}, {scratch['train_steps']} steps of "
            f"{scratch['batch_size']} at {scratch['input_shape'][0]} px, {scratch['net_type']} "
            f"width {scratch['net_width']:g}, {scratch['precision']}) "
            f"{scratch['cpu_seconds'] / 60:.1f} CPU-min, {scratch['seconds'] / 60:.1f} wall-min"
        )
    lines.append(line)
text = (
    f"\n## Cost\n\nMachine: {machine_line()} when the table was written (wall minutes "
    "depend on it, CPU minutes much less).\n\n" + "\n".join(lines) + "\n"
)
print(text)
with open(sys.argv[2], "a") as f:
    f.write(text)
PY
exit "$status"
