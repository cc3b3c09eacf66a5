"""The one place that decides which implementation each convolution, BatchNorm and pooling call uses.

The layers (research.models.conv.Conv / conv2d, research.models.norm.BatchNorm,
research.models.pooling.max_pool / avg_pool) read like flax.linen and ask this module; models never
read the environment or choose kernels themselves.

Implementation families ("impl"):
  xla     plain lax.conv_general_dilated and jnp reductions: always on GPU/TPU, where nothing of
          the native path (research.models.native_cpu, research/models/native/cpu_kernels.cc) is
          imported or traced;
  cpu     XLA-only rewrites of each convolution op that XLA:CPU runs faster (research.models.conv);
  native  the FFI kernels of research.models.native_cpu where the rules below pick them, the
          "cpu" forms elsewhere; BatchNorm's per-channel sums and the non-overlapping max pool
          (forward and gradient) on native kernels (f32).
Which one runs: the `impl` argument of a layer, else `forced_impl(...)` (a context manager, for code
that needs a family while it traces, e.g. research.models.multitask), else $RESEARCH_CONV_IMPL
(xla|cpu|native|auto), else "auto": "native" on the CPU backend when the kernels build, "cpu" when
they do not, "xla" on any other backend. The first resolution in a process logs one line saying
which path each layer family takes.

Per-layer rules (`conv_plan`), fixed for a given (instruction set of the kernel build, layer shape):
a pure function of the shape and of the build's vector width, so every process of a run -- and a
resumed run -- makes the same choice, whatever the machine's load. The thresholds come from
scripts/bench_conv.py and scripts/cpu_benchmark.sh on a 2-core AMD EPYC (Zen 4), with the
AVX-512 build and the AVX2 build (RESEARCH_NATIVE_ISA=avx2, 8-float vectors, 16 registers), see
the README. `decisions()` returns every choice made so far in this process (JSON-able), with the
CPU, the kernel build and the JAX version, for the run's record.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import platform
from types import ModuleType
from typing import Any, Iterator, NamedTuple, Optional

import jax

IMPL_ENV_VAR = "RESEARCH_CONV_IMPL"
IMPLS = ("auto", "xla", "cpu", "native")
# Bumped whenever a rule below changes: part of `decisions()`.
RULES_VERSION = 11

# The implementations resolved so far in this process (each logged once).
_resolved: set[str] = set()
_forced: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("research_conv_impl", default=None)


def _checked(impl: str, source: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f"Unknown convolution implementation {impl!r} ({source}); expected one of {IMPLS}.")
  return impl


@contextlib.contextmanager
def forced_impl(impl: str) -> Iterator[None]:
  """Within the block (this thread / context), layers without an explicit `impl` use `impl`."""
  token = _forced.set(_checked(impl, "forced_impl"))
  try:
    yield
  finally:
    _forced.reset(token)


def native_module() -> ModuleType:
  """research.models.native_cpu, imported on first use (never on a GPU/TPU-only path)."""
  from research.models import native_cpu
  return native_cpu


def resolve_impl(impl: Optional[str] = None) -> str:
  """"xla", "cpu" or "native" for a layer: `impl`, else `forced_impl`, else $RESEARCH_CONV_IMPL,
  else "auto" (see the module docstring). Logs the families' paths once per process."""
  if impl:
    source = "argument `impl`"
  elif _forced.get():
    impl, source = _forced.get(), "forced_impl"
  else:
    impl = os.environ.get(IMPL_ENV_VAR) or "auto"
    source = f"${IMPL_ENV_VAR}" if os.environ.get(IMPL_ENV_VAR) else "default"
  impl = _checked(impl, source)
  cpu = jax.default_backend() == "cpu"
  if impl == "auto":
    impl = ("native" if native_module().available() else "cpu") if cpu else "xla"
  elif impl == "native":
    if not cpu:
      raise RuntimeError(f"Convolution implementation 'native' ({source}) runs on the CPU backend only, "
                         f"not {jax.default_backend()}; use 'xla' or 'auto'.")
    if not native_module().available():
      raise RuntimeError(f"Convolution implementation 'native' ({source}) was asked for, but the native "
                         f"kernels are unavailable: {native_module().unavailable_reason()}")
  if impl not in _resolved:
    _resolved.add(impl)
    paths = "; ".join(f"{name}: {path}" for name, path in families(impl).items())
    logging.info("Layer implementations on %s (%r from %s) -- %s", jax.default_backend(), impl, source, paths)
  return impl


def _isa_description() -> str:
  native = native_module()
  return f"{native.isa()} build, {32 * native.lanes()}-bit vectors"


def families(impl: str) -> dict[str, str]:
  """What each layer family runs under `impl` (the log line and `decisions()`)."""
  conv = {"xla": "lax.conv_general_dilated",
          "cpu": "XLA-only CPU forms (1x1 as matmul, row-dilated/col2im/chunked gradients)",
          "native": f"native kernels per conv_plan ({_isa_description()}), else the XLA-only CPU forms"
          if impl == "native" else ""}[impl]
  return {"convolution": conv,
          "batch_norm": "native channel sums (f32), one-pass custom gradient" if impl == "native"
          else "jnp channel sums, one-pass custom gradient",
          "pooling": ("non-overlapping VALID windows: native max kernels (f32), else a reshape (custom max "
                      "gradient); else flax" if impl == "native" else
                      "reshape for non-overlapping VALID windows (custom max gradient), else flax")
                     + " (on CPU, overlapping max windows with a strided-tap gradient)"}


# ---------------------------------------------------------------------------------------------
# Convolution rules.

class ConvPlan(NamedTuple):
  """How one convolution layer's forward pass and gradients run (hashable, static under jit).

  forward:     "native" | "tap_sum" (one input channel: kh * kw broadcast products) | "xla" |
               "row_dilated" (rows dilated by 2 so that XLA:CPU runs Eigen) | "matmul" (1x1)
  input_grad:  "native_scatter" | "native_stride1" | "col2im" | "xla" (transpose of the plain
               convolution) | "row_dilated" | "xla_flipped" / "row_dilated_flipped" (those as
               forward convolutions of dy with the native kernel's flip of the kernel) |
               "native_phases" / "row_dilated_phases" (strided: one stride-1 convolution of dy per
               output phase, on the native forward kernel or Eigen's, interleaved) | "matmul"
               (1x1: autodiff)
  kernel_grad: "native" | "chunked" (16-image chunks of the plain convolution) | "row_dilated" |
               "matmul" (1x1: autodiff)
  split_groups: the kernel gradient is computed group by group (2-8 groups), each as kernel_grad.
  kept_input:  how the forward pass keeps x for an XLA kernel gradient ("chunked", "row_dilated"),
               which reads it transposed: "" (as it comes), "matmul" (the result of a matmul by the
               identity) or "store" (research.models.native_cpu.store); see research.models.conv.
  """
  forward: str
  input_grad: str
  kernel_grad: str
  split_groups: bool = False
  kept_input: str = ""


# Plain convolutions with at most 16 input and output channels already run on Eigen; with at most
# _FEW_CHANNELS input channels, YNNPACK's forward beats Eigen's row-dilated one (RGB stems).
_FEW_CHANNELS = 4
# Up to this many input channels, a matmul plus col2im beats Eigen's stride-1 input gradient
# (LeNet's 6; the col2im sum costs kh * kw reads per input element, too many for strided stems).
_COL2IM_MAX_CHANNELS = 8
# Grouped kernel gradients: one convolution per group up to this many groups; beyond, XLA's
# batch-group decomposition (groups x the FLOPs, as plain XLA does).
_MAX_SPLIT_GROUPS = 8
# XLA kernel gradients of inputs with at least this many channels read x as stored (`kept_input`):
# as a matmul's result in the "cpu" family, by the native store in the "native" one, which moves
# nothing where the matmul costs 2 C FLOPs an element (ResNet-50's 256- and 512-channel 3x3 layers,
# AVX2 build: ~19 ms of identity matmuls a step).
_KEEP_INPUT_MIN_CHANNELS = 16
# Kernel gradients of convolutions with <= 16 channels as 16-image chunks (Eigen), at most 32 chunks.
_KERNEL_GRAD_CHUNK = 16
_MAX_KERNEL_GRAD_CHUNKS = 32
# Native forward passes (and stride-1 input gradients, the forward kernel on dy) up to this many
# channels in and out, for 16-float vectors (AVX-512) and narrower: beyond, Eigen's GEMM is as fast
# or faster. 3x3 forward, ms, native vs Eigen's (row-dilated), AMD EPYC Zen 4, 2 cores: AVX-512
# build 128 channels at 16x16 (batch 128) 50.7 vs 55.4, at 28x28 (batch 8) 9.3 vs 9.8; 256 at 14x14
# (batch 8) 9.5 vs 9.1, 512 at 7x7 12.7 vs 9.4; AVX2 build 32 at 16x16 3.4 vs 3.9, 64 at 8x8 4.4 vs
# 3.4, 128 at 16x16 62 vs 52.
_NATIVE_MAX_CHANNELS_WIDE, _NATIVE_MAX_CHANNELS_NARROW = 128, 32
# Forward passes with 2-4 input channels (RGB stems) take the native kernel up to the wide limit
# on either build: the alternative is YNNPACK's single-threaded convolution. AVX2 build, ms, native
# vs YNNPACK: ResNet-50's 7x7/2 3 -> 64 at 224 (batch 8) 10.5 vs 21.1, AlexNet's 11x11/4 8.0 vs
# 13.5, VGG's 3x3 3 -> 64 at 224 40 vs 66, 3x3 3 -> 64 at 32x32 (batch 128) 15.4 vs 26.3, 3 -> 128
# 29 vs 49. One input channel keeps the tap sum, faster there (1 -> 64 5x5 at 28x28, batch 128:
# 3.7 vs 6.3).
# Native kernel gradients up to this many channels in and out, for 16-float vectors and narrower.
# AVX-512 build, 3x3, batch 32: 128 ch at 28x28 26 ms vs Eigen's 48, 256 at 14x14 26 vs 32, 512 at
# 7x7 51 vs 32. AVX2 build (a 6 x 16-float register block: a quarter of the AVX-512 block's FMAs per
# pixel read, so wide layers wait on the cache), ms, native vs the "cpu" form (scripts/bench_conv.py):
# 3x3 64 at 56x56 (batch 8) 11.5 vs 15.5, 128 at 28x28 13.3 vs 11.9, 256 at 14x14 14.0 vs 10.6,
# 256 at 8x8 (batch 128) 78 vs 58.
_NATIVE_MAX_KERNEL_GRAD_CHANNELS_WIDE, _NATIVE_MAX_KERNEL_GRAD_CHANNELS_NARROW = 256, 128
# Native kernel gradients of 1x1 convolutions up to this many channels in and out (forward and
# input gradient stay matmuls). The matmul's kernel gradient reads x and dy transposed
# ([C, N*H*W]); XLA:CPU fuses the elementwise chain that made dy (BatchNorm's backward pass, the
# residual) into that transpose and recomputes it there in transposed order: ResNet-50, batch 8 at
# 224, spent 0.88 s of thread time a step in those transposes. The native kernel reads both as
# stored (step 2.41 -> 2.03 s with 512 channels, 1.9 s with 1024); at 2048 channels (7x7) it is
# slower than the matmul with its transpose. The AVX2 build's kernel loses from 512 channels on
# (ResNet-50's 256 -> 512 stride 2: 15.8 vs 12.4 ms, 512 -> 256: 14.4 vs 9.5; 256 -> 64 at 56x56:
# 6.5 vs 10.3): ResNet-50's step with the AVX2 build's limits 128 / 256 against 256 / 1024,
# alternating: 1,526-1,535 vs 1,611-1,621 ms.
_NATIVE_MAX_POINTWISE_GRAD_CHANNELS_WIDE, _NATIVE_MAX_POINTWISE_GRAD_CHANNELS_NARROW = 1024, 256
# Scatter input gradients (native_cpu.input_grad) when strided or with fewer input channels than
# this (ResNet-20's 16 -> 32 stride-2 layer 4.7 -> 2.1 ms, LeNet's 6-channel layer 1.1 -> 0.5 ms).
_NATIVE_INPUT_GRAD_MIN_CHANNELS = 16
# Strided input gradients the scatter does not take (wider than ~20 channels for 3x3): by phases
# (conv._phase_input_grad), the forward pass's FLOPs, instead of the transposed convolution of dy
# dilated by the strides (stride^2 times as many). 2-core Xeon, ms, phases vs before, batch 128:
# 3x3/2 64 -> 128 at 32x32 36-42 vs 75-81 (AVX2 build 43 vs 73), 128 -> 256 at 16x16 18-20 vs
# 41-43, 256 -> 512 at 8x8 17-21 vs 19-22; ResNet-50's (batch 8) 128, 256 and 512-channel ones 7.6
# vs 9.9-11.6, 7.2-8.6 vs 9.1, 8.6-10 vs 10.8-11.1.

_decisions: dict[str, dict[str, Any]] = {}


def _eigen_already(cin: int, cout: int) -> bool:
  """Whether XLA:CPU runs the plain convolution with Eigen (YNNPACK declines <= 16 channels)."""
  return max(cin, cout) <= 16


def _xla_only_plan(n: int, cin: int, cout: int, strides: tuple[int, int], groups: int) -> ConvPlan:
  """The "cpu" family's plan for a kernel larger than 1x1."""
  if cin == 1:
    forward = "tap_sum"
  elif _eigen_already(cin, cout) or cin <= _FEW_CHANNELS:
    forward = "xla"
  else:
    forward = "row_dilated"
  if cin <= _COL2IM_MAX_CHANNELS and groups == 1 and strides == (1, 1):
    input_grad = "col2im"
  else:  # strides > 1: the transposed convolution has base dilation, so Eigen runs it as it is
    input_grad = "xla" if _eigen_already(cin, cout) or strides != (1, 1) else "row_dilated"
  split = 1 < groups <= _MAX_SPLIT_GROUPS
  gin, gout = (cin // groups, cout // groups) if split else (cin, cout)
  chunked = _eigen_already(gin, gout) and n <= _KERNEL_GRAD_CHUNK * _MAX_KERNEL_GRAD_CHUNKS
  kept = "matmul" if cin >= _KEEP_INPUT_MIN_CHANNELS else ""
  return ConvPlan(forward, input_grad, "chunked" if chunked else "row_dilated", split, kept)


def _native_plan(cin: int, cout: int, kernel_hw: tuple[int, int], strides: tuple[int, int],
                 dilation: tuple[int, int], fallback: ConvPlan) -> ConvPlan:
  """The "native" family's plan for an ungrouped kernel larger than 1x1 (the "cpu" plan where the
  native kernels lose)."""
  native = native_module()
  widest = _by_vector_width(_NATIVE_MAX_CHANNELS_WIDE, _NATIVE_MAX_CHANNELS_NARROW)
  few_inputs = 1 < cin <= _FEW_CHANNELS and cout <= _NATIVE_MAX_CHANNELS_WIDE
  forward = "native" if max(cin, cout) <= widest or few_inputs else fallback.forward
  input_grad = fallback.input_grad
  if cin > 1:
    scatter = native.scatter_fits(kernel_hw, cin, dilation[1])
    if scatter and (strides != (1, 1) or cin < _NATIVE_INPUT_GRAD_MIN_CHANNELS):
      input_grad = "native_scatter"
    elif strides == (1, 1) and max(cin, cout) <= widest:
      input_grad = "native_stride1"
    elif strides != (1, 1) and dilation == (1, 1):
      input_grad = "native_phases" if max(cin, cout) <= widest else "row_dilated_phases"
  if input_grad in ("xla", "row_dilated"):
    input_grad += "_flipped"
  widest_grad = _by_vector_width(_NATIVE_MAX_KERNEL_GRAD_CHANNELS_WIDE, _NATIVE_MAX_KERNEL_GRAD_CHANNELS_NARROW)
  if max(cin, cout) <= widest_grad:
    return ConvPlan(forward, input_grad, "native")
  # XLA's kernel gradient: its input kept by the native store where the "cpu" plan keeps a matmul's result.
  kept = "store" if fallback.kept_input else ""
  return ConvPlan(forward, input_grad, fallback.kernel_grad, kept_input=kept)


def _by_vector_width(wide: int, narrow: int) -> int:
  """A limit for the native kernel build: `wide` for 16-float vectors (AVX-512), else `narrow`."""
  return wide if native_module().lanes() >= 16 else narrow


def conv_plan(x_shape: tuple[int, ...], kernel_shape: tuple[int, ...], strides: tuple[int, int],
              dilation: tuple[int, int], groups: int, impl: str) -> ConvPlan:
  """The plan for a convolution of x [N, H, W, C_in] with a kernel [kh, kw, C_in/groups, C_out] under
  `impl` ("xla", "cpu" or "native", from `resolve_impl`), recorded for `decisions()`."""
  n, cin, (kh, kw), cout = x_shape[0], x_shape[3], kernel_shape[:2], kernel_shape[3]
  if impl == "xla":
    plan = ConvPlan("xla", "xla", "xla")
  elif (kh, kw) == (1, 1):
    native_grad = impl == "native" and groups == 1 and max(cin, cout) <= _by_vector_width(
        _NATIVE_MAX_POINTWISE_GRAD_CHANNELS_WIDE, _NATIVE_MAX_POINTWISE_GRAD_CHANNELS_NARROW)
    plan = ConvPlan("matmul", "matmul", "native" if native_grad else "matmul")
  else:
    plan = _xla_only_plan(n, cin, cout, strides, groups)
    if impl == "native" and groups == 1:
      plan = _native_plan(cin, cout, (kh, kw), strides, dilation, plan)
  key = (f"conv {kh}x{kw} stride {strides[0]}x{strides[1]} dilation {dilation[0]}x{dilation[1]} "
         f"groups {groups} {cin}->{cout} at {x_shape[1]}x{x_shape[2]} batch {n} ({impl})")
  _decisions[key] = plan._asdict()
  return plan


def pool_reshape(window: tuple[int, ...], strides: tuple[int, ...], padding: str) -> bool:
  """Whether a max/avg pool runs as a reshape and a reduction (windows equal to strides, VALID:
  non-overlapping, on every backend) rather than flax's reduce_window."""
  return tuple(window) == tuple(strides) and padding == "VALID"


def max_pool_taps(window: tuple[int, ...], strides: tuple[int, ...]) -> bool:
  """Whether a max pool that does not reshape takes research.models.pooling's tap gradient (the
  window's strided slices, masked to each window's first maximum and padded back) instead of
  select-and-scatter: on the CPU backend, where select-and-scatter pairs values with an iota of
  indices (ResNet's stem pool, batch 8 x 224: 124 -> 36 ms forward and backward)."""
  return jax.default_backend() == "cpu" and tuple(window) != tuple(strides)


def native_f32(dtype: Any, impl: Optional[str] = None) -> bool:
  """Whether the native kernels take a layer's non-convolution work for `dtype` under `impl`: the
  "native" family and float32 (BatchNorm's per-channel sums; the non-overlapping max pool, forward
  and gradient)."""
  return resolve_impl(impl) == "native" and dtype == jax.numpy.float32


def decisions() -> dict[str, Any]:
  """Every choice made so far in this process, JSON-able: {"rules_version", "jax", "backend",
  "cpu" (model name), "native_build" ({"isa", "vector_floats"} or {"unavailable": why}; absent off
  CPU), "families" (impl -> family -> path, for each impl resolved), "convolutions" (layer shape ->
  ConvPlan fields)}. The choices are functions of the rules version, the build's vector width and
  the shapes, so equal records mean the same programs."""
  record: dict[str, Any] = {"rules_version": RULES_VERSION, "jax": jax.__version__,
                            "backend": jax.default_backend(), "cpu": cpu_model()}
  if record["backend"] == "cpu":
    native = native_module()
    record["native_build"] = ({"isa": native.isa(), "vector_floats": native.lanes()} if native.available()
                              else {"unavailable": native.unavailable_reason()})
  record["families"] = {impl: families(impl) for impl in sorted(_resolved)}
  record["convolutions"] = dict(sorted(_decisions.items()))
  return record


def cpu_model() -> str:
  """The host CPU's model name (/proc/cpuinfo), else platform.processor()."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()
