#!/usr/bin/env bash
# Serving throughput of every runtime (results/serving_bench.{jsonl,md}).
#
#   scripts/serving_bench.sh [--mvtec_root=../shared/data/mvtec_ad] [--out=runs/serving_bench]
#
# Trains two short runs (their weights do not change the speed), then measures, in one process,
# the in-process Detector, the SavedModel, TFLite (float32 and int8 weights), ONNX Runtime and
# OpenVINO on each run's test images:
#   fmnist_fp32  the quick contrastive default (Fashion-MNIST class 0, 32x32, ResNet-18 width
#            0.25), 100 training steps, float32;
#   fmnist   the same with --precision=auto (mixed bfloat16 on CPUs with AVX512_BF16: the
#            in-process paths run bfloat16, the TFLite/ONNX exports float32);
#   bottle   the MVTec AD bottle folder as an image-level folder dataset (train/good normal,
#            test/* scored) at 256x256, ResNet-18 width 0.25, 30 steps of 16 (skipped without
#            the data).
# Runtimes whose package is missing are recorded as skipped (pip install '.[export,openvino]').
set -euo pipefail
cd "$(dirname "$0")/.."
MVTEC=../shared/data/mvtec_ad
OUT=runs/serving_bench
for arg in "$@"; do
  case "$arg" in
    --mvtec_root=*) MVTEC="${arg#*=}" ;;
    --out=*) OUT="${arg#*=}" ;;
    *) echo "unknown option $arg (valid: --mvtec_root=DIR --out=DIR)" >&2; exit 2 ;;
  esac
done
runs="$OUT/fmnist_fp32,$OUT/fmnist"
python train_and_eval_loop.py --method=contrastive --train_steps=100 --report=false \
  --precision=float32 --model_dir="$OUT/fmnist_fp32"
python train_and_eval_loop.py --method=contrastive --train_steps=100 --report=false \
  --model_dir="$OUT/fmnist"
if [[ -d "$MVTEC/bottle/train/good" ]]; then
  python train_and_eval_loop.py --method=contrastive --dataset=folder --root="$MVTEC/bottle" \
    --category=good --input_shape=256,256,3 --net_type=resnet18 --net_width=0.25 \
    --batch_size=16 --train_steps=30 --report=false --model_dir="$OUT/bottle"
  runs="$runs,$OUT/bottle"
else
  echo "note: $MVTEC/bottle is absent; the 256x256 case is skipped" >&2
fi
uptime
python -m deep_representation_one_class.bench --serving="$runs" \
  --out=results/serving_bench.jsonl --serving_md=results/serving_bench.md
