"""Micro-benchmark of one convolution layer: XLA vs the project's CPU path (vs PyTorch eager if installed).

  python scripts/bench_conv.py                        # default layers
  python scripts/bench_conv.py --layers resnet_3x3_64 lenet_c1 --reps 5
  python scripts/bench_conv.py --list
  python scripts/bench_conv.py --resnet50             # every ResNet-50 layer, summed over the network
                                                      # (the steps, and each op on its own)

For each layer it times, in milliseconds (best of --reps after one warm-up call):
  fwd     y = conv(x, kernel)
  dgrad   input gradient  dL/dx       [N, H, W, C_in]
  wgrad   kernel gradient dL/dkernel  [kh, kw, C_in/groups, C_out]
  step    forward + both gradients + bias gradient + an SGD update of kernel and bias
for `research.models.conv.conv2d` with impl="xla" (plain lax.conv_general_dilated), impl="cpu" and
impl="native" (when the native kernels build),
and for torch.nn.functional.conv2d (NCHW, eager autograd) when torch is importable. JAX timings are
of jitted functions on device-resident f32 arrays.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from research.models import native_cpu
from research.models.conv import conv2d, explicit_padding


class Layer(NamedTuple):
  """One conv layer: input [batch, size, size, cin] -> [batch, size', size', cout]."""
  batch: int
  size: int
  cin: int
  cout: int
  kernel: int
  stride: int = 1
  padding: Any = "SAME"
  dilation: int = 1
  groups: int = 1


LAYERS = {
    "resnet_3x3_64": Layer(128, 32, 64, 64, 3, 1, 1),
    "resnet_3x3_64_s2": Layer(128, 32, 64, 128, 3, 2, 1),
    "resnet_1x1_s2": Layer(128, 32, 64, 128, 1, 2, 0),
    "resnet_3x3_256_8x8": Layer(128, 8, 256, 256, 3, 1, 1),
    "resnet20_3x3_16": Layer(128, 32, 16, 16, 3, 1, 1),
    "resnet20_3x3_32": Layer(128, 16, 32, 32, 3, 1, 1),
    "resnet20_3x3_64": Layer(128, 8, 64, 64, 3, 1, 1),
    "resnet20_stem": Layer(128, 32, 3, 16, 3, 1, 1),
    "resnet20_3x3_16_s2": Layer(128, 32, 16, 32, 3, 2, 1),
    "resnet20_3x3_32_s2": Layer(128, 16, 32, 64, 3, 2, 1),
    "resnet18_3x3_128_s2": Layer(128, 16, 128, 256, 3, 2, 1),
    "resnet18_3x3_256_s2": Layer(128, 8, 256, 512, 3, 2, 1),
    "lenet_c1": Layer(128, 28, 1, 6, 5, 1, 2),
    "lenet_c3": Layer(128, 14, 6, 16, 5, 1, "VALID"),
    "resnet50_stem_7x7_s2": Layer(32, 224, 3, 64, 7, 2, 3),
    "resnet50_3x3_56": Layer(32, 56, 64, 64, 3, 1, 1),
    "alexnet_11x11_s4": Layer(32, 224, 3, 64, 11, 4, 2),
    "deeplab_3x3_rate6": Layer(16, 33, 128, 128, 3, 1, 6, 6),
    "grouped_3x3_g2": Layer(128, 16, 64, 64, 3, 1, 1, 1, 2),
}
# Every distinct convolution of torchvision's ResNet-50 (stride on the 3x3, "v1.5") at batch 8,
# 224x224, with how many times it occurs: --resnet50 times them all and sums the weighted steps.
RESNET50 = {
    "r50_stem_7x7_s2": (Layer(8, 224, 3, 64, 7, 2, 3), 1),
    "r50_l1_1x1_64_64": (Layer(8, 56, 64, 64, 1, 1, 0), 1),
    "r50_l1_3x3_64": (Layer(8, 56, 64, 64, 3, 1, 1), 3),
    "r50_l1_1x1_64_256": (Layer(8, 56, 64, 256, 1, 1, 0), 4),  # 3 expansions + the downsample
    "r50_l1_1x1_256_64": (Layer(8, 56, 256, 64, 1, 1, 0), 2),
    "r50_l2_1x1_256_128": (Layer(8, 56, 256, 128, 1, 1, 0), 1),
    "r50_l2_3x3_128_s2": (Layer(8, 56, 128, 128, 3, 2, 1), 1),
    "r50_l2_1x1_256_512_s2": (Layer(8, 56, 256, 512, 1, 2, 0), 1),
    "r50_l2_1x1_128_512": (Layer(8, 28, 128, 512, 1, 1, 0), 4),
    "r50_l2_1x1_512_128": (Layer(8, 28, 512, 128, 1, 1, 0), 3),
    "r50_l2_3x3_128": (Layer(8, 28, 128, 128, 3, 1, 1), 3),
    "r50_l3_1x1_512_256": (Layer(8, 28, 512, 256, 1, 1, 0), 1),
    "r50_l3_3x3_256_s2": (Layer(8, 28, 256, 256, 3, 2, 1), 1),
    "r50_l3_1x1_512_1024_s2": (Layer(8, 28, 512, 1024, 1, 2, 0), 1),
    "r50_l3_1x1_256_1024": (Layer(8, 14, 256, 1024, 1, 1, 0), 6),
    "r50_l3_1x1_1024_256": (Layer(8, 14, 1024, 256, 1, 1, 0), 5),
    "r50_l3_3x3_256": (Layer(8, 14, 256, 256, 3, 1, 1), 5),
    "r50_l4_1x1_1024_512": (Layer(8, 14, 1024, 512, 1, 1, 0), 1),
    "r50_l4_3x3_512_s2": (Layer(8, 14, 512, 512, 3, 2, 1), 1),
    "r50_l4_1x1_1024_2048_s2": (Layer(8, 14, 1024, 2048, 1, 2, 0), 1),
    "r50_l4_1x1_512_2048": (Layer(8, 7, 512, 2048, 1, 1, 0), 3),
    "r50_l4_1x1_2048_512": (Layer(8, 7, 2048, 512, 1, 1, 0), 2),
    "r50_l4_3x3_512": (Layer(8, 7, 512, 512, 3, 1, 1), 2),
}
LAYERS.update({name: layer for name, (layer, _) in RESNET50.items()})
DEFAULT_LAYERS = ["resnet_3x3_64", "resnet_3x3_64_s2", "resnet_1x1_s2", "resnet_3x3_256_8x8",
                  "resnet20_3x3_16", "resnet20_3x3_32", "lenet_c1", "lenet_c3"]
OPS = ("fwd", "dgrad", "wgrad", "step")


def best_of(fn: Callable[[], Any], reps: int) -> float:
  """Seconds of the fastest of `reps` calls of fn (after one warm-up call); fn blocks until done."""
  fn()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def jax_timings(layer: Layer, impl: str, reps: int) -> dict[str, float]:
  """Seconds per op (OPS) for conv2d(..., impl=impl) on this layer."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((layer.batch, layer.size, layer.size, layer.cin)), jnp.float32)
  kernel = jnp.asarray(0.1 * rng.standard_normal((layer.kernel, layer.kernel, layer.cin // layer.groups,
                                                  layer.cout)), jnp.float32)
  bias = jnp.zeros((layer.cout,), jnp.float32)

  def conv(x_, k_):
    return conv2d(x_, k_, layer.stride, layer.padding, layer.dilation, layer.groups, impl)

  dy = jnp.asarray(rng.standard_normal(jax.eval_shape(conv, x, kernel).shape), jnp.float32)
  fwd = jax.jit(conv)
  dgrad = jax.jit(lambda k_, g: jax.vjp(lambda x_: conv(x_, k_), x)[1](g)[0])
  wgrad = jax.jit(lambda x_, g: jax.vjp(lambda k_: conv(x_, k_), kernel)[1](g)[0])

  @jax.jit
  def step(k_, b_, x_, g):
    loss = lambda k, b, xx: jnp.sum((conv(xx, k) + b) * g)
    dk, db, dx = jax.grad(loss, argnums=(0, 1, 2))(k_, b_, x_)
    return k_ - 0.01 * dk, b_ - 0.01 * db, dx

  calls = {"fwd": lambda: fwd(x, kernel), "dgrad": lambda: dgrad(kernel, dy), "wgrad": lambda: wgrad(x, dy),
           "step": lambda: step(kernel, bias, x, dy)}
  return {op: best_of(lambda: jax.block_until_ready(calls[op]()), reps) for op in OPS}


def torch_timings(layer: Layer, reps: int) -> Optional[dict[str, float]]:
  """Seconds per op (OPS) for torch.nn.functional.conv2d in eager mode, or None without torch."""
  try:
    import torch
  except ImportError:
    return None
  pads = explicit_padding(layer.padding, (layer.size, layer.size), (layer.kernel, layer.kernel),
                          (layer.stride, layer.stride), (layer.dilation, layer.dilation))
  (top, bottom), (left, right) = pads
  symmetric = top == bottom and left == right
  x = torch.randn(layer.batch, layer.cin, layer.size, layer.size, requires_grad=True)
  kernel = torch.randn(layer.cout, layer.cin // layer.groups, layer.kernel, layer.kernel, requires_grad=True)
  bias = torch.zeros(layer.cout, requires_grad=True)

  def conv(x_):
    if not symmetric:
      x_ = torch.nn.functional.pad(x_, (left, right, top, bottom))
    return torch.nn.functional.conv2d(x_, kernel, bias, layer.stride, (top, left) if symmetric else 0,
                                      layer.dilation, layer.groups)

  y = conv(x)
  dy = torch.randn_like(y)

  def fwd():
    with torch.no_grad():
      conv(x)

  def dgrad():
    torch.autograd.grad(y, x, dy, retain_graph=True)

  def wgrad():
    torch.autograd.grad(y, kernel, dy, retain_graph=True)

  def step():
    x.grad = kernel.grad = bias.grad = None
    conv(x).backward(dy)
    with torch.no_grad():
      kernel.sub_(0.01 * kernel.grad)
      bias.sub_(0.01 * bias.grad)

  return {op: best_of(fn, reps) for op, fn in zip(OPS, (fwd, dgrad, wgrad, step))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--layers", nargs="+", default=DEFAULT_LAYERS, choices=sorted(LAYERS), metavar="LAYER")
  parser.add_argument("--reps", type=int, default=3, help="timed calls per op (best is reported)")
  parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch comparison")
  parser.add_argument("--list", action="store_true", help="print the known layers and exit")
  parser.add_argument("--resnet50", action="store_true", help="every ResNet-50 layer (batch 8, 224x224) and "
                      "the step times summed over the network")
  args = parser.parse_args()
  if args.resnet50:
    args.layers = list(RESNET50)
  if args.list:
    for name, layer in LAYERS.items():
      print(f"{name:22s} {layer}")
    return
  torch_note = ""
  if not args.no_torch:
    try:
      import torch
      torch_note = f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
      torch_note = ", torch not installed"
  print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{os.cpu_count()} CPUs{torch_note}; milliseconds, best of {args.reps}")
  impls = ["xla", "cpu"] + (["native"] if native_cpu.available() else [])
  if native_cpu.available():
    print(f"native kernels: {native_cpu.isa()} build ({native_cpu.ISA_ENV_VAR}), {native_cpu.lanes()}-float vectors")
  header = f"{'layer':22s} {'op':6s}" + "".join(f" {impl:>9s}" for impl in impls) + f" {'xla/' + impls[-1]:>11s}"
  if torch_note and "not installed" not in torch_note:
    header += f" {'torch':>9s} {'torch/' + impls[-1]:>12s}"
  print(header)
  totals = [dict.fromkeys(OPS, 0.0) for _ in range(len(impls) + 1)]  # per implementation, per op
  for name in args.layers:
    layer = LAYERS[name]
    timings = [jax_timings(layer, impl, args.reps) for impl in impls]
    torch_ms = None if args.no_torch else torch_timings(layer, args.reps)
    count = RESNET50[name][1] if args.resnet50 else 1
    for i, t in enumerate(timings + ([torch_ms] if torch_ms else [])):
      for op in OPS:
        totals[i][op] += count * t[op]
    for op in OPS:
      best = timings[-1][op]
      row = f"{name:22s} {op:6s}" + "".join(f" {1e3 * t[op]:9.2f}" for t in timings)
      row += f" {timings[0][op] / best:10.2f}x"
      if torch_ms is not None:
        row += f" {1e3 * torch_ms[op]:9.2f} {torch_ms[op] / best:11.2f}x"
      print(row, flush=True)
  if args.resnet50:
    names = impls + (["torch"] if not args.no_torch and totals[-1]["step"] else [])
    print("ResNet-50 convolution steps summed over the network (ms): " +
          ", ".join(f"{n} {1e3 * t['step']:.0f}" for n, t in zip(names, totals)))
    for op in OPS[:-1]:
      print(f"  {op} summed: " + ", ".join(f"{n} {1e3 * t[op]:.0f}" for n, t in zip(names, totals)))


if __name__ == "__main__":
  main()
