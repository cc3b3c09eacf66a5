"""Training throughput of a config on the current devices.

  research-benchmark --config configs/lenet5_digits.py [--steps 100] [--config.batch_size=128]
  research-benchmark --config ... --input_only     # the input pipeline alone
  research-benchmark --config configs/resnet20_shapes.py --model resnet56   # another model, same data

With torch installed (the [dev] extra), the same run times a PyTorch eager reference of the model
(research/benchmarks/torch_reference.py: same layers, same batch, SGD with momentum) and prints the ratio
torch time / our time (>= 1 means we are faster). The two are timed in alternation, --rounds times
in one process (each round: --steps of ours, then as many of PyTorch's), and the medians are
compared, so a change of the machine's load affects both alike.

Prints the compile time of the train step, then steps/s and examples/s measured after compilation
and warm-up, for (a) one device-resident batch reused every step (the step alone, i.e. synthetic
input) and (b) the real input pipeline feeding the step. On a known accelerator it also prints the
model FLOP utilization: the step's FLOPs (XLA cost analysis of the lowered program) per second
over the devices' peak dense FLOP/s for the config's dtype.
"""
from __future__ import annotations

import os
import tempfile
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

import research.models  # noqa: F401
import research.tasks  # noqa: F401
from research.cli import shipped
from research.cli.app import run_app
from research.core import parallel
from research.config_sections import model_config
from research.core.train import Trainer
from research.data import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 100, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps after compilation.")
_INPUT_ONLY = flags.DEFINE_bool("input_only", False, "Time only the input pipeline (batches/s).")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Peak dense TFLOP/s of one device for MFU (0: from a "
                           "table of known accelerators for the config's dtype; unknown: no MFU).")
_FLOPS = flags.DEFINE_float("gflops_per_example", 0.0, "Training FLOPs (forward + backward) per example in "
                            "GFLOP, for MFU where the backend's cost analysis gives none (XLA:GPU).")
_MODEL = flags.DEFINE_string("model", None, "Time this registered model (its default fields) instead of the "
                             "config's model, on the config's data and optimizer.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", None, "Write a jax.profiler trace (TensorBoard / Perfetto) of "
                                  "--trace_steps device-resident steps, after the timing, to this folder.")
_TRACE_STEPS = flags.DEFINE_integer("trace_steps", 3, "Steps in the --trace_dir profile.")
_PIPELINE = flags.DEFINE_bool("input_pipeline", True, "Also time the step fed by the real input pipeline.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating timing rounds of ours and PyTorch's step (medians).")
_TORCH = flags.DEFINE_bool("torch", True, "Also time a PyTorch eager reference of the same model "
                           "and batch (when torch is installed and has the model).")
flags.mark_flags_as_required(["config"])


# Peak dense TFLOP/s per device (vendor data sheets, SXM parts): (bfloat16/float16, float32 TF32).
PEAK_TFLOPS = {"H100": (989.4, 494.7), "H200": (989.4, 494.7), "A100": (312.0, 156.0),
               "TPU v4": (275.0, 275.0), "TPU v5e": (197.0, 197.0), "TPU v5p": (459.0, 459.0)}


def peak_tflops(device_kind: str, dtype: str) -> float:
  """Peak dense TFLOP/s of one device of `device_kind` for `dtype`, 0 if unknown."""
  for name, (half, single) in PEAK_TFLOPS.items():
    if name.lower() in device_kind.lower():
      return half if dtype in ("bfloat16", "float16") else single
  return 0.0


def step_flops(lowered) -> float:
  """FLOPs of one step, from XLA's cost analysis of the lowered (not yet optimized) program: the
  compiled program's analysis misses convolutions that GPUs run as cuDNN calls (0 if unavailable)."""
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def _time_steps(step, state, accum, batches, n: int, warmup: int, one_in_flight: bool):
  """(seconds for n steps after `warmup` untimed ones, state, accum); `one_in_flight`: each step
  waits for the one before (parallel.one_program_in_flight)."""
  def run(state, accum, count: int):
    for _ in range(count):
      state, accum, _ = step(state, accum, next(batches))
      if one_in_flight:
        jax.block_until_ready(accum)
    return jax.block_until_ready((state, accum))

  state, accum = run(state, accum, warmup)
  start = time.perf_counter()
  state, accum = run(state, accum, n)
  return time.perf_counter() - start, state, accum


def _torch_step(model_name: str, task, batch):
  """(a function timing n steps of the PyTorch eager reference, in seconds per step) after its
  warm-up, or None if unavailable."""
  try:
    import torch
    from research.benchmarks import torch_reference
  except ImportError:
    print("pytorch reference: torch not installed")
    return None
  images = np.asarray(jax.device_get(jax.jit(task.train_images)(batch)))  # the model's float input
  labels = np.asarray(jax.device_get(batch["label"]))
  try:
    model = torch_reference.build(model_name, task.num_classes, images.shape[-1])
  except KeyError as e:
    print(f"pytorch reference: {e.args[0]}")
    return None
  print(f"pytorch reference: torch {torch.__version__}, {torch.get_num_threads()} threads, CPU kernels "
        f"{torch.backends.cpu.get_cpu_capability()} (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA restrict them)")
  x = torch.tensor(images).permute(0, 3, 1, 2).contiguous()
  y = torch.tensor(labels).long()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  model.train()

  def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()

  for _ in range(_WARMUP.value):
    step()

  def seconds_per_step(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
      step()
    return (time.perf_counter() - start) / n

  return seconds_per_step


def main(argv):
  del argv
  config = _CONFIG.value
  config.compilation_cache_dir = ""
  if _MODEL.value:
    with config.unlocked():
      config.model = model_config(_MODEL.value)
  with tempfile.TemporaryDirectory() as workdir:
    trainer = Trainer(config, workdir)
    batch = config.batch_size
    train_iter = pipeline.train_batches(trainer.train_source, trainer.task.preprocess_train,
                                        trainer.local_batch, config.seed,
                                        num_workers=config.dataset.num_workers,
                                        preprocess_batch=trainer.task.preprocess_train_batch)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; model {config.model.name}; "
          f"global batch {batch}")
    if _INPUT_ONLY.value:
      for _ in range(_WARMUP.value):
        next(train_iter)
      start, cpu = time.perf_counter(), time.process_time()
      for _ in range(_STEPS.value):
        next(train_iter)
      seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
      print(f"input pipeline: {_STEPS.value / seconds:.1f} batches/s, "
            f"{_STEPS.value * batch / seconds:.0f} examples/s; this process used {cpu:.1f} CPU s: "
            f"{_STEPS.value * batch / cpu:.0f} examples per CPU second (with num_workers=0: per core)")
      return
    accum = parallel.replicate(trainer.zero_accum, trainer.mesh)
    step = trainer._compile_train_step(accum)
    one_in_flight = parallel.one_program_in_flight(trainer.mesh)
    print(f"compile: {trainer.compile_seconds:.2f} s")
    fixed = parallel.to_global(next(train_iter), trainer.mesh)

    def same_batch():
      while True:
        yield fixed

    torch_step = _torch_step(config.model.name, trainer.task, fixed) if _TORCH.value else None
    ours_rounds, torch_rounds, state = [], [], trainer.state
    for round_ in range(max(1, _ROUNDS.value)):
      seconds, state, accum = _time_steps(step, state, accum, same_batch(), _STEPS.value,
                                          _WARMUP.value if round_ == 0 else 0, one_in_flight)
      ours_rounds.append(seconds / _STEPS.value)
      if torch_step is not None:
        torch_rounds.append(torch_step(_STEPS.value))
    ours = float(np.median(ours_rounds))
    print(f"step only (device-resident batch): {1 / ours:.2f} steps/s, {batch / ours:.0f} examples/s, "
          f"{1000 * ours:.2f} ms/step")
    print("rounds ours ms/step: " + " ".join(f"{1000 * t:.1f}" for t in ours_rounds))
    if _TRACE_DIR.value:
      with jax.profiler.trace(_TRACE_DIR.value, create_perfetto_trace=True):
        _, state, accum = _time_steps(step, state, accum, same_batch(), _TRACE_STEPS.value, 0, one_in_flight)
      print(f"profile of {_TRACE_STEPS.value} steps written under {_TRACE_DIR.value}")
    flops = step_flops(trainer.lowered_train_step) or _FLOPS.value * 1e9 * batch
    if not flops:
      print("step FLOPs: no cost analysis on this backend; pass --gflops_per_example for MFU")
    peak = _PEAK.value or peak_tflops(jax.devices()[0].device_kind, config.dtype)
    if flops:
      achieved = flops / ours / 1e12
      mfu = f", MFU {100 * achieved / (peak * jax.device_count()):.1f}% of {peak:g} TFLOP/s x {jax.device_count()}" if peak else ""
      print(f"step FLOPs {flops / 1e9:.1f} GFLOP (XLA cost analysis): {achieved:.1f} TFLOP/s{mfu}")
    if torch_rounds:
      theirs = float(np.median(torch_rounds))
      print("rounds torch ms/step: " + " ".join(f"{1000 * t:.1f}" for t in torch_rounds))
      print(f"pytorch eager reference: {1000 * theirs:.2f} ms/step; ratio torch/ours = {theirs / ours:.2f}")
    if _PIPELINE.value:
      batches = parallel.prefetch_to_device(train_iter, trainer.mesh, config.dataset.prefetch_batches)
      seconds, _, _ = _time_steps(step, state, accum, batches, _STEPS.value, _WARMUP.value, one_in_flight)
      print(f"with input pipeline: {_STEPS.value / seconds:.2f} steps/s, "
            f"{_STEPS.value * batch / seconds:.0f} examples/s "
            f"({100 * ours * _STEPS.value / seconds:.0f}% of the step-only rate)")
    trainer.checkpointer.close()


def run() -> None:
  """Console entry point; `--config` takes a path or a shipped config's name."""
  run_app(main, prepare_argv=shipped.resolve_config_flag)


if __name__ == "__main__":
  run()
