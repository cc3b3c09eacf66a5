"""Native CPU kernels (research/models/native/cpu_kernels.cc) called through the XLA FFI:
convolutions, BatchNorm's per-channel sums, the max pool over non-overlapping windows (forward
and gradient) and `store`, an identity XLA cannot fuse across (research.models.fusion_barrier).

XLA:CPU computes a convolution's kernel gradient as an im2col GEMM over a transposed copy of the
input, 2-4x slower than PyTorch's oneDNN on the small-channel layers of LeNet and CIFAR ResNets
(issue 11). cpu_kernels.cc holds direct, register-blocked kernels for NHWC f32 (a forward pass, which
also gives the stride-1 input gradient, and a kernel gradient) that run on XLA's intra-op threads.

The source is compiled on first use with the host's C++ compiler (`$CXX`, else `c++`, -O3) into a
cache folder -- `$RESEARCH_NATIVE_CACHE`, else `~/.cache/research/native` -- under a name that
hashes the source, the compiler command, the jaxlib version and the CPU, so every later process
loads it without compiling. The instruction set it targets is `$RESEARCH_NATIVE_ISA`:
  native   (default) -march=native: AVX-512 where the CPU has it;
  avx2     -march=native -mno-avx512f: the AVX2 build on an AVX-512 x86 machine (8-float vectors,
           16 registers), to test and time what AVX2-only CPUs run;
  avx512   -march=native, refused on a CPU without AVX-512F.
Each variant is cached under its own name. `load_library(source)` builds and caches any other C++
source the same way (research/data/native/resize.cc, the training crops' resize). If the kernels cannot be built (no compiler, not
Linux/macOS, a variant the CPU cannot run, or a JAX without the public API used here)
`available()` is False, one warning says why, and research.models.cpu_dispatch keeps to the
XLA-only CPU path.

Functions here take the input already padded (the kernels compute a VALID convolution with strides
and kernel dilation), and the max pool's input already cropped to whole windows; shapes are NHWC
for images and HWIO for kernels.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

from research.models import manual_axes

CACHE_ENV_VAR = "RESEARCH_NATIVE_CACHE"
ISA_ENV_VAR = "RESEARCH_NATIVE_ISA"
ISAS = ("native", "avx2", "avx512")
# Compiling takes about 15 s on an idle 2-core machine; much longer when its cores are shared.
_BUILD_TIMEOUT_S = 900
SOURCE = Path(__file__).parent / "native" / "cpu_kernels.cc"
_TARGETS = {"research_conv_forward": "ResearchConvForward",
            "research_conv_kernel_grad": "ResearchConvKernelGrad",
            "research_conv_kernel_grad_lanes": "ResearchConvKernelGradLanes",
            "research_conv_input_grad": "ResearchConvInputGrad",
            "research_channel_sums": "ResearchChannelSums",
            "research_max_pool": "ResearchMaxPool",
            "research_max_pool_grad": "ResearchMaxPoolGrad",
            "research_flip_kernel": "ResearchFlipKernel",
            "research_store": "ResearchStore"}


def scatter_fits(kernel_hw: tuple[int, int], channels: int, width_dilation: int) -> bool:
  """Whether `input_grad` takes this kernel: it keeps one pixel's contributions in registers, kh
  kernel rows of kw * C floats (kernel dilation 1 along the width; else kh * kw runs of C), each
  rounded up to whole vectors, at most the build's ResearchMaxScatterFloats() in all."""
  lanes, most, _ = _limits()
  kh, kw = kernel_hw
  runs, run = (kh, kw * channels) if width_dilation == 1 else (kh * kw, channels)
  return runs * -(-run // lanes) * lanes <= most


def isa() -> str:
  """The instruction-set variant asked for: $RESEARCH_NATIVE_ISA, default "native"."""
  variant = os.environ.get(ISA_ENV_VAR) or "native"
  if variant not in ISAS:
    raise ValueError(f"Unknown native kernel variant ${ISA_ENV_VAR}={variant!r}; expected one of {ISAS}.")
  return variant


def _cpu_signature() -> str:
  """The host CPU's model name and flags (-march=native builds for them)."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "".join(sorted(set(lines)))
  except OSError:
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
  """The x86 feature flags of /proc/cpuinfo (empty elsewhere)."""
  return set(" ".join(line.split(":", 1)[1] for line in _cpu_signature().splitlines()
                      if line.startswith("flags")).split())


def _isa_flags(variant: str) -> list[str]:
  """Compiler flags for `variant`; RuntimeError when this CPU cannot run it."""
  if variant == "native":
    return ["-march=native"]
  needed = "avx2" if variant == "avx2" else "avx512f"
  if needed not in _cpu_flags():
    raise RuntimeError(f"${ISA_ENV_VAR}={variant} needs a CPU with {needed}; unset it or use 'native'")
  return ["-march=native", "-mno-avx512f"] if variant == "avx2" else ["-march=native"]


def _compile_command(output: Path, source: Path = SOURCE) -> list[str]:
  compiler = shlex.split(os.environ.get("CXX", "c++"))
  return [*compiler, "-O3", *_isa_flags(isa()), "-std=c++17", "-shared", "-fPIC",
          f"-I{jax.ffi.include_dir()}", str(source), "-o", str(output)]


def library_path(source: Path = SOURCE) -> Path:
  """Where the compiled library of `source` (default: the kernels) for this compiler, jaxlib and
  CPU lives (built or not)."""
  cache = Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "research" / "native")
  key = hashlib.sha256()
  key.update(source.read_bytes())
  key.update(" ".join(_compile_command(Path("out.so"), source)).encode())
  key.update(jaxlib.__version__.encode())
  key.update(_cpu_signature().encode())
  return cache / f"{source.stem}_{isa()}_{key.hexdigest()[:16]}.so"


def load_library(source: Path = SOURCE) -> ctypes.CDLL:
  """`source` compiled (once per machine, compiler, jaxlib and CPU: cached by `library_path`) and
  loaded. Raises OSError, RuntimeError or subprocess.SubprocessError when it cannot be."""
  path = library_path(source)
  if not path.exists():
    logging.warning("building %s (native CPU code, once per machine, compiler and JAX version; the "
                    "convolution kernels take 1-2 minutes on 2 cores) into %s", source.name, path.parent)
    start = time.perf_counter()
    _build(path, source)
    logging.warning("%s built in %.0f s", source.name, time.perf_counter() - start)
  return ctypes.cdll.LoadLibrary(str(path))


def _build(path: Path, source: Path = SOURCE) -> None:
  """Compiles `source` to `path` (written to a temporary file, then renamed: safe under concurrency)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
  os.close(fd)
  try:
    # Its own process group, so that a timeout stops the compiler proper (cc1plus) too.
    with subprocess.Popen(_compile_command(Path(tmp), source), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as compiler:
      try:
        _, stderr = compiler.communicate(timeout=_BUILD_TIMEOUT_S)
      except subprocess.TimeoutExpired:
        os.killpg(compiler.pid, signal.SIGKILL)
        raise
    if compiler.returncode != 0:
      raise RuntimeError(f"compiling {source.name} failed:\n{stderr[-2000:]}")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@functools.lru_cache(maxsize=None)
def _library() -> tuple[Optional[ctypes.CDLL], Optional[str]]:
  """Builds (if needed), loads and registers the kernels: (library, None), or (None, why not)."""
  if platform.system() not in ("Linux", "Darwin"):
    return None, f"native kernels are built for Linux and macOS, not {platform.system()}"
  missing = _missing_jax_api()
  if missing:
    return None, f"jax {jax.__version__} does not expose {missing}"
  try:
    library = load_library(SOURCE)
    for target, symbol in _TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
  except (OSError, RuntimeError, ValueError, subprocess.SubprocessError, AttributeError) as error:
    return None, f"{type(error).__name__}: {error}"
  return library, None


def _load() -> Optional[str]:
  """Builds, loads and registers the kernels once; None on success, else why not."""
  return _library()[1]


@functools.lru_cache(maxsize=None)
def _limits() -> tuple[int, int, int]:
  """(vector width in floats, most floats of one pixel's scatter contributions, most taps of a
  kernel row in pixel lanes) of the loaded build."""
  library = _library()[0]
  if library is None:
    raise RuntimeError(f"native kernels unavailable: {_load()}")
  return library.ResearchKernelLanes(), library.ResearchMaxScatterFloats(), library.ResearchMaxLaneTaps()


def lanes() -> int:
  """The loaded build's vector width in floats (16: AVX-512, 8: AVX2)."""
  return _limits()[0]


def available() -> bool:
  """Whether the native kernels are built and registered (builds them on the first call)."""
  reason = _load()
  if reason is not None:
    _warn_once(reason)
  return reason is None


def unavailable_reason() -> Optional[str]:
  """Why the native kernels could not be built or loaded; None when they are available."""
  return _load()


@functools.lru_cache(maxsize=None)
def _warn_once(reason: str) -> None:
  logging.warning("Native CPU convolution kernels unavailable (%s); using the XLA-only CPU path.", reason)


Pads = tuple[tuple[int, int], tuple[int, int]]


def _attributes(strides: tuple[int, int], dilation: tuple[int, int], pads: Pads) -> dict[str, np.int64]:
  return {"stride_h": np.int64(strides[0]), "stride_w": np.int64(strides[1]),
          "dilation_h": np.int64(dilation[0]), "dilation_w": np.int64(dilation[1]),
          "pad_top": np.int64(pads[0][0]), "pad_left": np.int64(pads[1][0])}


def _out_size(size: int, k: int, stride: int, pads: tuple[int, int], dilation: int) -> int:
  return (size + sum(pads) - (k - 1) * dilation - 1) // stride + 1


def _forward_call(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], pads: Pads,
                  dilation: tuple[int, int]) -> jnp.ndarray:
  n, h, w, _ = x.shape
  kh, kw, _, k = kernel.shape
  out = jax.ShapeDtypeStruct((n, _out_size(h, kh, strides[0], pads[0], dilation[0]),
                              _out_size(w, kw, strides[1], pads[1], dilation[1]), k), jnp.float32)
  return jax.ffi.ffi_call("research_conv_forward", out)(x, kernel, **_attributes(strides, dilation, pads))


def kernel_grad_in_pixel_lanes(x_channels: int, kernel_w: int, dy_shape: tuple[int, ...], stride_w: int,
                               dilation_w: int) -> bool:
  """Whether the kernel gradient runs in pixel lanes (cpu_kernels.cc's research_conv_kernel_grad_lanes):
  for one input channel with unit width stride and dilation, where vectors of a row's output
  pixels fill their lanes more than 1.5 times as well as vectors of output channels. Its dy is
  transposed to [N, K, OH, OW] first (by XLA, fused with dy's producer where it can be: ~0.1 ms
  for LeNet-5's first layer at batch 128).

  LeNet-5's first layer with the AVX-512 build (28 pixels a row in 2 vectors of 16, against 6
  channels in one: 0.875 of the lanes used against 0.375): the kernel gradient 0.58 -> 0.28 ms,
  the training step 4.5-4.7 -> 4.1-4.2 ms (AMD EPYC, 2 cores). With the AVX2 build its 6 channels
  fill 0.75 of 8 lanes; the pixel-lane kernel (0.28 ms) does not pay for the transpose there
  (0.31 ms without it), hence the margin."""
  n, _, most_taps = _limits()
  if x_channels != 1 or stride_w != 1 or dilation_w != 1 or kernel_w > most_taps:
    return False
  ow, k = dy_shape[2], dy_shape[3]
  # (ow / (ceil(ow / n) * n)) > 1.5 * (k / (ceil(k / n) * n)), in integers
  return 2 * ow * -(-k // n) > 3 * k * -(-ow // n)


def _kernel_grad_call(x: jnp.ndarray, dy: jnp.ndarray, kernel_hw: tuple[int, int], strides: tuple[int, int],
                      pads: Pads, dilation: tuple[int, int]) -> jnp.ndarray:
  out = jax.ShapeDtypeStruct((*kernel_hw, x.shape[3], dy.shape[3]), jnp.float32)
  if kernel_grad_in_pixel_lanes(x.shape[3], kernel_hw[1], dy.shape, strides[1], dilation[1]):
    return jax.ffi.ffi_call("research_conv_kernel_grad_lanes", out)(
        x, jnp.transpose(dy, (0, 3, 1, 2)), **_attributes(strides, dilation, pads))
  return jax.ffi.ffi_call("research_conv_kernel_grad", out)(x, dy, **_attributes(strides, dilation, pads))


# Sharding: a custom call is opaque to XLA's SPMD partitioner, which would gather a batch-sharded
# input onto every device. (Shardy wants each rule's special factors listed in order of first
# appearance.) These rules let the batch dimension stay sharded: each device runs the
# kernel on its own images, and the kernel gradient, a sum over images, is all-reduced.
def _batch_axes(arg_shapes) -> Any:
  """The mesh axes the first operand's batch dimension is sharded over (None: replicated)."""
  spec = arg_shapes[0].sharding.spec
  return spec[0] if len(spec) else None


def _forward_partition(strides, pads, dilation, mesh, arg_shapes, result_shape):
  batch = NamedSharding(mesh, P(_batch_axes(arg_shapes)))
  return (mesh, lambda x, kernel: _forward_call(x, kernel, strides, pads, dilation), batch,
          (batch, NamedSharding(mesh, P())))


def _forward_infer(strides, pads, dilation, mesh, arg_shapes, result_shape):
  return NamedSharding(mesh, P(_batch_axes(arg_shapes)))


def _kernel_grad_partition(kernel_hw, strides, pads, dilation, mesh, arg_shapes, result_shape):
  axes = _batch_axes(arg_shapes)
  batch = NamedSharding(mesh, P(axes))

  def per_shard(x, dy):
    dw = _kernel_grad_call(x, dy, kernel_hw, strides, pads, dilation)
    return dw if axes is None else lax.psum(dw, axes)

  return mesh, per_shard, NamedSharding(mesh, P()), (batch, batch)


def _input_grad_call(dy: jnp.ndarray, kernel: jnp.ndarray, x_hw: tuple[int, int], strides: tuple[int, int],
                     pads: Pads, dilation: tuple[int, int]) -> jnp.ndarray:
  out = jax.ShapeDtypeStruct((dy.shape[0], *x_hw, kernel.shape[2]), jnp.float32)
  return jax.ffi.ffi_call("research_conv_input_grad", out)(dy, kernel, **_attributes(strides, dilation, pads))


def _input_grad_partition(x_hw, strides, pads, dilation, mesh, arg_shapes, result_shape):
  batch = NamedSharding(mesh, P(_batch_axes(arg_shapes)))
  return (mesh, lambda dy, kernel: _input_grad_call(dy, kernel, x_hw, strides, pads, dilation), batch,
          (batch, NamedSharding(mesh, P())))


def _input_grad_infer(x_hw, strides, pads, dilation, mesh, arg_shapes, result_shape):
  return NamedSharding(mesh, P(_batch_axes(arg_shapes)))


def _channel_sums_call(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  out = jax.ShapeDtypeStruct((2, a.shape[-1]), jnp.float32)
  return jax.ffi.ffi_call("research_channel_sums", out)(a, b)


def _channel_sums_partition(mesh, arg_shapes, result_shape):
  axes = _batch_axes(arg_shapes)
  batch = NamedSharding(mesh, P(axes))

  def per_shard(a, b):
    sums = _channel_sums_call(a, b)
    return sums if axes is None else lax.psum(sums, axes)

  return mesh, per_shard, NamedSharding(mesh, P()), (batch, batch)


def _window_attributes(window: tuple[int, int]) -> dict[str, np.int64]:
  return {"window_h": np.int64(window[0]), "window_w": np.int64(window[1])}


def _max_pool_call(x: jnp.ndarray, window: tuple[int, int]) -> jnp.ndarray:
  n, h, w, c = x.shape
  out = jax.ShapeDtypeStruct((n, h // window[0], w // window[1], c), jnp.float32)
  return jax.ffi.ffi_call("research_max_pool", out)(x, **_window_attributes(window))


def _max_pool_grad_call(x: jnp.ndarray, y: jnp.ndarray, dy: jnp.ndarray,
                        window: tuple[int, int]) -> tuple[jnp.ndarray, ...]:
  out = (jax.ShapeDtypeStruct(y.shape, jnp.float32),) * (window[0] * window[1])
  return tuple(jax.ffi.ffi_call("research_max_pool_grad", out)(x, y, dy, **_window_attributes(window)))


def _max_pool_partition(window, mesh, arg_shapes, result_shape):
  batch = NamedSharding(mesh, P(_batch_axes(arg_shapes)))
  return mesh, lambda x: _max_pool_call(x, window), batch, (batch,)


def _max_pool_grad_partition(window, mesh, arg_shapes, result_shape):
  batch = NamedSharding(mesh, P(_batch_axes(arg_shapes)))
  return (mesh, lambda x, y, dy: _max_pool_grad_call(x, y, dy, window),
          _max_pool_grad_infer(window, mesh, arg_shapes, result_shape), (batch, batch, batch))


def _max_pool_infer(window, mesh, arg_shapes, result_shape):
  return NamedSharding(mesh, P(_batch_axes(arg_shapes)))


def _max_pool_grad_infer(window, mesh, arg_shapes, result_shape):
  return (NamedSharding(mesh, P(_batch_axes(arg_shapes))),) * (window[0] * window[1])


def _replicated_result(mesh, arg_shapes, result_shape):
  return NamedSharding(mesh, P())


def _kernel_grad_infer(kernel_hw, strides, pads, dilation, mesh, arg_shapes, result_shape):
  return _replicated_result(mesh, arg_shapes, result_shape)


_forward_op = custom_partitioning(_forward_call, static_argnums=(2, 3, 4))
_forward_op.def_partition(partition=_forward_partition, infer_sharding_from_operands=_forward_infer,
                          sharding_rule="n h w c, i j c k -> n a b k",
                          need_replication_factors=("h", "w", "c", "i", "j", "k", "a", "b"))
_input_grad_op = custom_partitioning(_input_grad_call, static_argnums=(2, 3, 4, 5))
_input_grad_op.def_partition(partition=_input_grad_partition, infer_sharding_from_operands=_input_grad_infer,
                             sharding_rule="n a b k, i j c k -> n h w c",
                             need_replication_factors=("a", "b", "k", "i", "j", "c", "h", "w"))
_channel_sums_op = custom_partitioning(_channel_sums_call)
_channel_sums_op.def_partition(partition=_channel_sums_partition, infer_sharding_from_operands=_replicated_result,
                               sharding_rule="n m c, n m c -> s c", reduction_factors=("n",),
                               need_replication_factors=("m", "c", "s"))
_kernel_grad_op = custom_partitioning(_kernel_grad_call, static_argnums=(2, 3, 4, 5))
_kernel_grad_op.def_partition(partition=_kernel_grad_partition, infer_sharding_from_operands=_kernel_grad_infer,
                              sharding_rule="n h w c, n a b k -> i j c k", reduction_factors=("n",),
                              need_replication_factors=("h", "w", "c", "a", "b", "k", "i", "j"))


_max_pool_op = custom_partitioning(_max_pool_call, static_argnums=(1,))
_max_pool_op.def_partition(partition=_max_pool_partition, infer_sharding_from_operands=_max_pool_infer,
                           sharding_rule="n h w c -> n a b c", need_replication_factors=("h", "w", "c", "a", "b"))


@functools.lru_cache(maxsize=None)
def _max_pool_grad_op(taps: int) -> Callable[..., tuple[jnp.ndarray, ...]]:
  """The custom-partitioned gradient call for windows of `taps` pixels (one result each)."""
  op = custom_partitioning(_max_pool_grad_call, static_argnums=(3,))
  op.def_partition(partition=_max_pool_grad_partition, infer_sharding_from_operands=_max_pool_grad_infer,
                   sharding_rule="n h w c, n a b c, n a b c -> " + ", ".join(["n a b c"] * taps),
                   need_replication_factors=("h", "w", "c", "a", "b"))
  return op


def _store_call(x: jnp.ndarray) -> jnp.ndarray:
  return jax.ffi.ffi_call("research_store", jax.ShapeDtypeStruct(x.shape, x.dtype), input_output_aliases={0: 0})(x)


def _store_partition(mesh, arg_shapes, result_shape):
  return mesh, _store_call, arg_shapes[0].sharding, (arg_shapes[0].sharding,)


def _store_infer(mesh, arg_shapes, result_shape):
  return arg_shapes[0].sharding


@functools.lru_cache(maxsize=None)
def _store_op(rank: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """The custom-partitioned store for arrays of `rank` dimensions (each shard stored where it is)."""
  dims = " ".join(f"d{i}" for i in range(rank))
  op = custom_partitioning(_store_call)
  op.def_partition(partition=_store_partition, infer_sharding_from_operands=_store_infer,
                   sharding_rule=f"{dims} -> {dims}")
  return op


def _flip_kernel_call(kernel: jnp.ndarray) -> jnp.ndarray:
  kh, kw, c, k = kernel.shape
  return jax.ffi.ffi_call("research_flip_kernel", jax.ShapeDtypeStruct((kh, kw, k, c), kernel.dtype))(kernel)


def _flip_kernel_partition(mesh, arg_shapes, result_shape):
  replicated = NamedSharding(mesh, P())
  return mesh, _flip_kernel_call, replicated, (replicated,)


_flip_kernel_op = custom_partitioning(_flip_kernel_call)
_flip_kernel_op.def_partition(partition=_flip_kernel_partition, infer_sharding_from_operands=_replicated_result,
                              sharding_rule="h w c k -> h w k c", need_replication_factors=("h", "w", "c", "k"))


def _missing_jax_api() -> Optional[str]:
  """What this module needs from JAX and this version lacks (None: nothing): the FFI, pcast, and
  an abstract value's varying manual axes (the result of an FFI call inside shard_map is marked
  varying over its operands' axes, and gradients are summed over the axes a parameter lacks)."""
  if not all(hasattr(jax.ffi, name) for name in ("ffi_call", "register_ffi_target", "pycapsule", "include_dir")):
    return "jax.ffi (ffi_call, register_ffi_target, pycapsule, include_dir)"
  if not hasattr(lax, "pcast"):
    return "jax.lax.pcast"
  if not manual_axes.has_varying_axes():
    return "an abstract value's varying manual axes (`vma` or `manual_axis_type.varying`)"
  return None


def _call(op: Callable[..., jnp.ndarray], call: Callable[..., jnp.ndarray], a: jnp.ndarray, b: jnp.ndarray,
          *static) -> jnp.ndarray:
  """op(a, b, *static) (the custom-partitioned call), or inside shard_map -- where operands vary
  over manual mesh axes and there is nothing to partition -- the plain call, its result marked as
  varying over the operands' axes (an FFI call's result carries no such type)."""
  return _call_operands(op, call, (a, b), static)


def _call_operands(op: Callable[..., Any], call: Callable[..., Any], operands: tuple[jnp.ndarray, ...],
                   static: tuple) -> Any:
  """`_call` for any number of array operands (and an array or a tuple of arrays as the result)."""
  axes = tuple(sorted(frozenset().union(*(manual_axes.varying_axes(a) for a in operands))))
  if not axes:
    return op(*operands, *static)
  return jax.tree.map(lambda r: lax.pcast(r, axes, to="varying"), call(*operands, *static))


def forward(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], pads: Pads,
            dilation: tuple[int, int]) -> jnp.ndarray:
  """Convolution, x [N, H, W, C] f32, kernel [kh, kw, C, K] f32 -> [N, OH, OW, K] f32, zero padding
  `pads` ((top, bottom), (left, right); negative crops)."""
  return _call(_forward_op, _forward_call, x, kernel, strides, pads, dilation)


def kernel_grad(x: jnp.ndarray, dy: jnp.ndarray, kernel_hw: tuple[int, int], strides: tuple[int, int],
                pads: Pads, dilation: tuple[int, int]) -> jnp.ndarray:
  """dL/dkernel [kh, kw, C, K] of `forward` from x [N, H, W, C] and dy [N, OH, OW, K], f32."""
  return _call(_kernel_grad_op, _kernel_grad_call, x, dy, tuple(kernel_hw), strides, pads, dilation)


def input_grad(dy: jnp.ndarray, kernel: jnp.ndarray, x_hw: tuple[int, int], strides: tuple[int, int], pads: Pads,
               dilation: tuple[int, int]) -> jnp.ndarray:
  """dL/dx [N, H, W, C] of `forward` (any stride) from dy [N, OH, OW, K], kernel [kh, kw, C, K], f32,
  by scatter: each output pixel's dy @ kernel^T added to its input window (`scatter_fits` must hold)."""
  return _call(_input_grad_op, _input_grad_call, dy, kernel, tuple(x_hw), strides, pads, dilation)


def input_grad_stride1(dy: jnp.ndarray, kernel: jnp.ndarray, pads: Pads, dilation: tuple[int, int]) -> jnp.ndarray:
  """dL/dx [N, H, W, C] of a stride-1 `forward` from dy [N, OH, OW, K]: `forward` of dy with the kernel
  flipped and transposed ([kh, kw, K, C]) and padding (k - 1) * dilation - pad on each side."""
  (kh, kw), (dh, dw) = kernel.shape[:2], dilation
  (top, bottom), (left, right) = pads
  flipped = flip_kernel(kernel)
  transposed_pads = (((kh - 1) * dh - top, (kh - 1) * dh - bottom), ((kw - 1) * dw - left, (kw - 1) * dw - right))
  return forward(dy, flipped, (1, 1), transposed_pads, dilation)


def flip_kernel(kernel: jnp.ndarray) -> jnp.ndarray:
  """kernel [kh, kw, C, K] f32 -> [kh, kw, K, C], taps mirrored (result[i, j, k, c] = kernel[kh-1-i,
  kw-1-j, c, k]): the kernel that runs a convolution's input gradient as a forward convolution of
  dy, dilated by the strides where they are > 1 (replicated: a kernel is small)."""
  return _call_operands(_flip_kernel_op, _flip_kernel_call, (kernel,), ())


def channel_sums(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """[2, C] f32: per-channel sum of `a` and of `a * b` over every axis but the last, a, b [N, ..., C] f32
  (the batch, axis 0, may be sharded: the sums are over the global batch)."""
  n, c = a.shape[0], a.shape[-1]
  return _call(_channel_sums_op, _channel_sums_call, a.reshape(n, -1, c), b.reshape(n, -1, c))


def max_pool(x: jnp.ndarray, window: tuple[int, int]) -> jnp.ndarray:
  """Max over non-overlapping windows: x [N, OH * wh, OW * ww, C] f32 (cropped to whole windows) ->
  [N, OH, OW, C] f32, with lax.max's semantics (NaN if the window holds one; +0 over -0)."""
  return _call_operands(_max_pool_op, _max_pool_call, (x,), (tuple(window),))


def max_pool_grad(x: jnp.ndarray, y: jnp.ndarray, dy: jnp.ndarray, window: tuple[int, int]) -> tuple[jnp.ndarray, ...]:
  """The gradient of `max_pool` from x, y = max_pool(x, window) and dy [N, OH, OW, C], by window tap:
  wh * ww arrays [N, OH, OW, C], the (a * ww + b)-th dL/dx[:, a::wh, b::ww] -- each window's dy where
  x at tap (a, b) is the window's first x == y in row-major order, else 0 (a NaN window gets none)."""
  window = tuple(window)
  return _call_operands(_max_pool_grad_op(window[0] * window[1]), _max_pool_grad_call, (x, y, dy), (window,))


def store(x: jnp.ndarray) -> jnp.ndarray:
  """x unchanged (any shape and dtype), as the result of an FFI call whose buffer is x's own: XLA
  computes x once, in memory, and fuses none of its consumers back into what produced it."""
  return _call_operands(_store_op(x.ndim) if x.ndim else _store_call, _store_call, (x,), ())
