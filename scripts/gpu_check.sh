#!/usr/bin/env bash
# Device check for a lent GPU machine, as one prepared script: installs the GPU build if
# TensorFlow sees no GPU, runs `pytest -m gpu`, then trains the paper's contrastive
# configuration (scripts/run_contrastive.sh: ResNet-18 width 1, head 8x512+128, batch 32) on
# one CIFAR-10 class for a fixed number of epochs and prints steps/s, the AUROCs and the
# projected time of the paper's 2048 epochs.
#
# Usage (from the repository root):
#   scripts/gpu_check.sh --prepare       # here: copy the class's data into runs/gpu_data
#   scripts/gpu_check.sh                 # on the GPU machine, ~5 minutes
#   QUICK=1 scripts/gpu_check.sh         # tiny settings on CPU: checks the script itself
# The device machine receives only the repository (64 MiB at most), not ../shared: --prepare
# copies train/$CATEGORY and test/ of the CIFAR-10 JPEG folder (about 14 MB) into the ignored
# folder runs/gpu_data/cifar10-jpeg, which the device call must carry (carry=["runs/gpu_data"]).
# Environment:
#   DATA_ROOT  the CIFAR-10 image folder (train/<class>/*.jpg, test/<class>/*.jpg); default:
#              the first of runs/gpu_data/cifar10-jpeg, shared/data/cifar10-jpeg and
#              ../shared/data/cifar10-jpeg that exists
#              (QUICK=1 uses the synthetic `fake` dataset unless DATA_ROOT is set)
#   CATEGORY   inlier class folder (default airplane); EPOCHS (default 2; QUICK: 1)
#   STEPS_PER_CALL (default 50), JIT=1 adds --jit_compile, PRECISION (default float32)
#   SCRIPT     the recipe (default scripts/run_contrastive.sh; or run_rotation.sh, ...)
#   OUT        where the report and summary.json are copied (default runs/gpu_check/report)
#   RUN_DIR    the training run folder, restarted each time (default runs/gpu_check/run)
#   SKIP_INSTALL=1, SKIP_PYTEST=1 skip those steps; PYTHON (default python)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
read -r -a python_cmd <<<"${PYTHON:-python}"
quick="${QUICK:-0}"
out="${OUT:-runs/gpu_check/report}"
script="${SCRIPT:-scripts/run_contrastive.sh}"
category="${CATEGORY:-airplane}"

if [[ "${1:-}" == --prepare ]]; then
  src="${DATA_ROOT:-../shared/data/cifar10-jpeg}"
  dst="runs/gpu_data/cifar10-jpeg"
  [[ -d "$src/train/$category" && -d "$src/test" ]] ||
    { echo "gpu_check.sh: no $src/train/$category or $src/test; set DATA_ROOT" >&2; exit 2; }
  rm -rf "$dst"
  mkdir -p "$dst/train"
  cp -r "$src/train/$category" "$dst/train/"
  cp -r "$src/test" "$dst/"
  echo "copied $(find "$dst" -type f | wc -l) files ($(du -sh --apparent-size "$dst" | cut -f1))" \
    "to $dst; carry runs/gpu_data to the device"
  exit 0
elif (($# > 0)); then
  echo "gpu_check.sh: unexpected argument '$1' (only --prepare; settings are environment" \
    "variables, see the header)" >&2
  exit 2
fi
mkdir -p "$out"

echo "== machine"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
gpus="$("${python_cmd[@]}" -c \
  'import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' 2>/dev/null ||
  echo 0)"
echo "TensorFlow sees $gpus GPU(s)"
if [[ "$gpus" == 0 && "$quick" != 1 && "${SKIP_INSTALL:-0}" != 1 ]]; then
  echo "== pip install -e .[gpu] (TensorFlow sees no GPU)"
  if "${python_cmd[@]}" -m pip install -q -e ".[gpu]"; then
    gpus="$("${python_cmd[@]}" -c \
      'import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))')"
    echo "TensorFlow sees $gpus GPU(s) after the install"
  else
    echo "gpu_check.sh: pip install failed (offline?); going on with the installed TensorFlow" >&2
  fi
fi

if [[ "$quick" != 1 && "${SKIP_PYTEST:-0}" != 1 ]]; then
  echo "== pytest -m gpu"
  status=0
  "${python_cmd[@]}" -m pytest -m gpu -q -p no:cacheprovider || status=$?
  # 5 = no test carries the gpu marker; not a failure of this check.
  if ((status != 0 && status != 5)); then
    echo "gpu_check.sh: pytest -m gpu failed (exit $status)" >&2
    exit "$status"
  fi
fi

data_root="${DATA_ROOT:-}"
if [[ -z "$data_root" && "$quick" != 1 ]]; then
  for candidate in runs/gpu_data/cifar10-jpeg shared/data/cifar10-jpeg \
    ../shared/data/cifar10-jpeg; do
    if [[ -d "$candidate/train" ]]; then
      data_root="$candidate"
      break
    fi
  done
fi
if [[ -n "$data_root" ]]; then
  data_flags=(--dataset=folder "--root=$data_root" "--category=$category" --input_shape=32,32,3)
elif [[ "$quick" == 1 ]]; then
  data_flags=(--dataset=fake --category=0)
else
  echo "gpu_check.sh: no CIFAR-10 image folder; set DATA_ROOT (train/<class>/, test/<class>/)" >&2
  exit 2
fi

run_dir="${RUN_DIR:-runs/gpu_check/run}"
flags=("${data_flags[@]}" "--model_dir=$run_dir" --force_init
  "--num_epoch=${EPOCHS:-2}" "--steps_per_call=${STEPS_PER_CALL:-50}"
  "--precision=${PRECISION:-float32}")
if [[ "${JIT:-0}" == 1 ]]; then
  flags+=(--jit_compile)
fi
if [[ "$quick" == 1 ]]; then
  # Tiny network and few steps: exercises the script, not the hardware.
  flags+=(--net_type=resnet10 --net_width=0.125 --head_dims=16,8 "--num_epoch=${EPOCHS:-1}"
    --num_batch=4 --steps_per_call=2 --eval_batch_size=64 --classifiers=kde,kocsvm,gde)
fi

echo "== train: $script ${flags[*]}"
start=$(date +%s)
PYTHON="${PYTHON:-python}" bash "$script" "${flags[@]}"
echo "wall time $(($(date +%s) - start)) s (start-up, data, compilation, training, evaluation)"

echo "== report"
"${python_cmd[@]}" - "$run_dir" "$out" <<'PY'
"""Steps/s of the last epoch (compilation excluded), AUROCs, and the projected 2048 epochs."""
import glob
import json
import os
import shutil
import sys

run_dir, out = sys.argv[1], sys.argv[2]
summary = json.load(open(os.path.join(run_dir, "summary.json")))
run, cfg, metrics = summary["run"], summary["config"], summary["metrics"]
rates = []
for path in sorted(glob.glob(os.path.join(run_dir, "tb", "events.out.tfevents.*"))):
    import tensorflow as tf

    for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            if value.tag == "monitor/steps_per_sec":
                rates.append((event.step, float(tf.make_ndarray(value.tensor))))
rates.sort()
steps_per_sec = rates[-1][1] if rates else run["total_steps"] / max(run["train_seconds"], 1e-9)
spe = run["steps_per_epoch"]
projected_h = 2048 * spe / steps_per_sec / 3600
lines = [
    f"method {cfg['method']} distaug {cfg['distaug_type']} dataset {cfg['dataset']} "
    f"category {cfg['category']} net {cfg['net_type']} x{cfg['net_width']} batch "
    f"{cfg['batch_size']} precision {cfg['precision']} jit {cfg['jit_compile']}",
    f"replicas {run['num_replicas']}; {spe} steps/epoch x {cfg['num_epoch']} epochs = "
    f"{run['total_steps']} steps; train {run['train_seconds']:.1f} s, eval "
    f"{run['eval_seconds']:.1f} s",
    f"steps/s (last epoch) {steps_per_sec:.2f}; images/s {steps_per_sec * cfg['batch_size']:.0f}",
    f"projected 2048 epochs: {projected_h:.2f} h for this class (training only)",
    "AUROC: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items())),
]
if len(rates) < 2:
    lines.append("note: one epoch only, so steps/s includes tracing/compilation; use EPOCHS>=2")
print("\n".join(lines))
with open(os.path.join(out, "gpu_check.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
shutil.copy(os.path.join(run_dir, "summary.json"), os.path.join(out, "summary.json"))
PY
echo "report: $out/gpu_check.txt"
