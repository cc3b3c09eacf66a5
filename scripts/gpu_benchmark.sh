#!/usr/bin/env bash
# ResNet-50 training throughput and MFU on one GPU (issue 11): bf16 and f32, batch 256, 224x224,
# synthetic input (one device-resident batch) and the real input pipeline (the built-in shapes/128
# dataset decoded, resized to 224, cropped and flipped by Grain workers), via research-benchmark.
#
#   bash scripts/gpu_benchmark.sh            # on a machine with a GPU and this repo's dependencies
#
# Offline machines: put wheels of the missing dependencies in .whl/ (see the project README) and they
# are installed into /tmp/site first. Output goes to stdout and, when $OUT is set, $OUT/gpu_benchmark.log.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
LOG=${OUT:-/tmp}/gpu_benchmark.log
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  # --gflops_per_example: 23.8 GFLOP, XLA:CPU cost analysis of this step (XLA:GPU reports none).
  common=(--config=configs/resnet50_imagenet.py --gflops_per_example=23.8 --config.dataset.name=shapes/128 --config.dataset.data_dir=/tmp/tfds
          --config.task.num_classes=1000 --config.task.image_size=224 --config.batch_size=256
          --config.dataset.num_workers=14 --config.dataset.cache_mb=0 --torch=false)
  for dtype in ${DTYPES:-bfloat16 float32}; do
    echo "== resnet50 batch 256, dtype $dtype"
    research-benchmark "${common[@]}" --config.dtype=$dtype --steps "${STEPS:-40}" 2>&1 \
      | grep -E "^(devices|compile|step|with|pytorch)|Error|error" || true
  done
} 2>&1 | tee "$LOG"
