#!/usr/bin/env bash
# CPU training-step figures, via research-benchmark (device-resident batch, after compile and warm-up):
#   torch   the issue-11 comparison with PyTorch eager (torch installed: the [dev] extra), batch 128
#           (ResNet-50: 224x224, batch 8)
#   zoo     every classifier in the zoo at batch 32 and its native input size: LeNet-5 28x28x1
#           (digits), CIFAR-form ResNets 32x32x3 (shapes), ImageNet-form models 224x224x3 (shapes
#           resized, 1000 classes)
#
#   bash scripts/cpu_benchmark.sh [torch|zoo|all]     # default all; the table goes to stdout
#
# Ours and PyTorch's steps are timed in alternation in one process (benchmark.py --rounds, medians).
# The header says the CPU, its vector instruction sets, PyTorch's kernel ISA, the native kernel build
# ($RESEARCH_NATIVE_ISA), $RESEARCH_CONV_IMPL, the load average and the huge-page setting
# (research/host_memory.py). Run it on a quiet machine.
# With RESEARCH_NATIVE_ISA=avx2 PyTorch is restricted to AVX2 as well (ATEN_CPU_CAPABILITY,
# ONEDNN_MAX_CPU_ISA), as on an AVX2-only CPU; set them to compare against its AVX-512 kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
# The README's virtual environment when there is one (as the README's commands use), else python3.
if [[ -x .venv/bin/python ]]; then PYTHON=${PYTHON:-.venv/bin/python}; else PYTHON=${PYTHON:-python3}; fi
WHAT=${1:-all}
IMAGENET=(--config.task.image_size=224 --config.task.num_classes=1000 --config.task.augment="('flip',)")

# run MODEL INPUT STEPS BENCHMARK_ARGS...: one table row from benchmark.py's output.
run() {
  local model=$1 input=$2 steps=$3
  shift 3
  local out
  out=$("$PYTHON" -m research.cli.benchmark --model "$model" --steps "$steps" --input_pipeline=false "$@" 2>&1) || {
    echo "| $model | $input | failed: $(echo "$out" | grep -E "Error" | tail -1) |"; return; }
  local ms compile torch
  ms=$(echo "$out" | sed -n 's/.*, \([0-9.]*\) ms\/step$/\1/p')
  compile=$(echo "$out" | sed -n 's/^compile: \([0-9.]*\) s/\1/p')
  torch=$(echo "$out" | sed -n 's/^pytorch eager reference: \([0-9.]*\) ms\/step; ratio torch\/ours = \([0-9.]*\)/\1 | \2/p')
  echo "| $model | $input | $ms | $compile${torch:+ | $torch} |"
}

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
isa=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|avx2|avx512f|avx512bw|avx512_bf16|fma)$' | tr '\n' ' ')
echo "CPU: ${cpu:-unknown} ($(nproc) cores); vector ISA: ${isa:-none listed}"
echo "native build: RESEARCH_NATIVE_ISA=${RESEARCH_NATIVE_ISA:-native}; RESEARCH_CONV_IMPL=${RESEARCH_CONV_IMPL:-auto};" \
  "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# research.host_memory: the benchmark restarts itself with malloc's huge pages where THP is "madvise".
thp=$(sed -n 's/.*\[\(.*\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || true)
echo "transparent huge pages: ${thp:-unknown}; RESEARCH_HUGE_PAGES=${RESEARCH_HUGE_PAGES:-1}"
if [[ $WHAT == torch || $WHAT == all ]]; then
  # PyTorch's kernels (AVX512, AVX2, ...). The AVX2 build stands in for an AVX2-only CPU, where
  # PyTorch runs AVX2 kernels too: restrict them the same way unless the caller chose otherwise.
  if [[ ${RESEARCH_NATIVE_ISA:-native} == avx2 ]]; then
    export ATEN_CPU_CAPABILITY=${ATEN_CPU_CAPABILITY:-avx2} ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-AVX2}
  fi
  echo "PyTorch CPU kernels: $("$PYTHON" -c 'import torch; print(torch.__version__, torch.backends.cpu.get_cpu_capability())' 2>/dev/null || echo 'torch not installed')"
fi
echo

if [[ $WHAT == torch || $WHAT == all ]]; then
  echo "| model | input | ours ms/step | compile s | PyTorch eager ms/step | ratio torch/ours |"
  echo "|---|---|---|---|---|---|"
  run lenet5 "128 x 28x28x1" 200 --config=configs/lenet5_digits.py --config.batch_size=128
  run resnet20 "128 x 32x32x3" 20 --config=configs/resnet20_shapes.py --config.batch_size=128
  run resnet18_cifar "128 x 32x32x3" 5 --warmup=2 --config=configs/resnet20_shapes.py --config.batch_size=128
  run resnet50 "8 x 224x224x3" 5 --warmup=2 --config=configs/resnet20_shapes.py --config.batch_size=8 "${IMAGENET[@]}"
  echo
fi

if [[ $WHAT == zoo || $WHAT == all ]]; then
  echo "| model | input (batch 32) | ms/step | compile s |"
  echo "|---|---|---|---|"
  run lenet5 "28x28x1" 100 --torch=false --config=configs/lenet5_digits.py --config.batch_size=32
  for model in resnet20 resnet32 resnet44 resnet56 resnet110 resnet18_cifar; do
    run $model "32x32x3" 10 --warmup=2 --torch=false --config=configs/resnet20_shapes.py --config.batch_size=32
  done
  for model in alexnet googlenet resnet18 resnet34 resnet50 resnet101 resnet152 vgg11 vgg11_bn vgg13 vgg16 vgg16_bn vgg19; do
    run $model "224x224x3" 3 --warmup=1 --torch=false --config=configs/resnet20_shapes.py --config.batch_size=32 "${IMAGENET[@]}"
  done
fi
