"""The convolution layer every model in the project uses, with a fast path on CPU.

Layout: NHWC inputs and outputs, HWIO kernels ([kh, kw, C_in / groups, C_out]), as `flax.linen.Conv`.

Why a CPU path (issue 11). In jax 0.10, XLA:CPU hands every 2-D f32 convolution with more than 16
input or output features to YNNPACK (its `individual_convolution` library fusion; bf16 is converted
to f32 first). That kernel runs on one thread, and the weight gradient -- a convolution whose
"kernel" is the whole output gradient and whose features are the batch -- is far slower still
(3x3, batch 128, 32x32, 64->64: forward 0.33 s, input gradient 0.34 s, weight gradient 2.85 s,
where a matmul of the same FLOPs takes 0.15 s). XLA:CPU's other convolution, Eigen's,
uses all cores and runs all three at about matmul speed, but YNNPACK takes precedence whenever it
accepts the op. It refuses convolutions with base (lhs) dilation, so the CPU path writes a
convolution with its input rows "dilated" by 2 and the row stride, row kernel dilation and row
padding doubled (`_row_dilated_conv`): every tap reads the same input element as before, the
result is the same, there are no extra FLOPs, and Eigen runs it. (The global alternative, the
flag --xla_cpu_experimental_ynn_fusion_type=-individual_convolution, must be set before jax starts
and applies to a whole process; this layer needs no flag.)

What the XLA-only CPU path ("cpu") computes, per op (`_forward`, `_input_grad`, `_kernel_grad` in a `jax.custom_vjp`;
thresholds from scripts/bench_conv.py on a 2-core x86 machine):
  * 1x1 kernels: pad, strided slice and one matmul (`dot_general`); gradients by autodiff.
  * forward: one input channel (grayscale stems, LeNet) -> a sum of kh*kw broadcast products, one
    fused loop; at most 16 channels in and out, or at most 4 input channels -> the plain
    convolution (already Eigen, or YNNPACK where it wins for RGB stems); else row-dilated.
  * input gradient: stride 1 with at most 8 input channels -> dy @ kernel^T and col2im; strides > 1
    or at most 16 channels -> transpose of the plain convolution (base-dilated, so Eigen);
    else transpose of the row-dilated convolution.
  * kernel gradient: at most 16 channels -> transposes of the plain convolution on 16-image
    chunks, summed (16 features, so Eigen); else transpose of the row-dilated convolution;
    2-8 feature groups -> one per group (more groups use XLA's batch-group decomposition,
    groups x the FLOPs, as plain XLA does).
Every stride, padding (SAME, VALID, explicit, negative), dilation and group count is supported;
tests/test_conv.py checks values and both gradients against `lax.conv_general_dilated`. bf16
inputs accumulate in f32 and return bf16, as XLA's convolution does.

The native path (impl "native", the default on CPU). research.models.native_cpu's FFI kernels
(direct, register-blocked, im2col-free; built from C++ on first use) compute the forward pass and
the kernel gradient of every ungrouped f32 convolution with more than one input channel, and the
stride-1 input gradient with at least 16 input channels; everything else -- one input channel,
strided input gradients, groups, 1x1 kernels -- goes the XLA-only way above. ResNet-20 layers,
batch 128, 2 cores: forward 1.7-2.2 ms, kernel gradient 1.8 ms, vs 2.4-4 ms and 4-8 ms (XLA-only).
bf16 inputs are computed in f32 and returned as bf16.

Choice of implementation: `impl` argument / `Conv.impl` field, else the environment variable
RESEARCH_CONV_IMPL, else "auto". "auto" takes the native path when `jax.default_backend()` is
"cpu" at trace time and the kernels build, the XLA-only CPU path ("cpu") when they do not, and
plain `lax.conv_general_dilated` otherwise (cuDNN is already fast on GPU). "xla", "cpu" and
"native" force one. Parameters are the same whichever runs.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from research.models import native_cpu

PaddingLike = Union[str, int, Sequence[Union[int, tuple[int, int]]]]
Pads = tuple[tuple[int, int], tuple[int, int]]

IMPL_ENV_VAR = "RESEARCH_CONV_IMPL"
IMPLS = ("auto", "xla", "cpu", "native")
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def resolve_impl(impl: Optional[str] = None) -> str:
  """Returns "xla", "cpu" or "native": `impl`, else $RESEARCH_CONV_IMPL, else "auto".

  "auto" is "native" on the CPU backend when the native kernels build (research.models.native_cpu),
  "cpu" on the CPU backend when they do not, and "xla" elsewhere.
  """
  impl = impl or os.environ.get(IMPL_ENV_VAR) or "auto"
  if impl not in IMPLS:
    raise ValueError(f"Unknown convolution implementation {impl!r}; expected one of {IMPLS} "
                     f"(argument `impl` or ${IMPL_ENV_VAR}).")
  if impl == "auto":
    if jax.default_backend() != "cpu":
      return "xla"
    return "native" if native_cpu.available() else "cpu"
  if impl == "native" and not native_cpu.available():
    raise RuntimeError(f"Convolution implementation 'native' was asked for, but the native kernels are "
                       f"unavailable: {native_cpu.unavailable_reason()}")
  return impl


def _pair(value: Union[int, Sequence[int]]) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


def explicit_padding(padding: PaddingLike, in_hw: Sequence[int], kernel_hw: Sequence[int],
                     strides: tuple[int, int], dilation: tuple[int, int]) -> Pads:
  """Padding as ((top, bottom), (left, right)) from "SAME" / "VALID" / "SAME_LOWER", an int, or per-side values."""
  if isinstance(padding, str):
    window = [(k - 1) * d + 1 for k, d in zip(kernel_hw, dilation)]
    return tuple(tuple(p) for p in lax.padtype_to_pads(in_hw, window, strides, padding))
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


class _Spec(NamedTuple):
  """Static convolution parameters (hashable, for custom_vjp): ((sh, sw), ((top, bottom), (left, right)), (dh, dw),
  groups, whether the native kernels may be used)."""
  strides: tuple[int, int]
  pads: Pads
  dilation: tuple[int, int]
  groups: int
  native: bool = False


def _xla_conv(x: jnp.ndarray, kernel: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """lax.conv_general_dilated: x [N, H, W, C_in], kernel [kh, kw, C_in/groups, C_out] -> [N, H', W', C_out]."""
  return lax.conv_general_dilated(x, kernel, spec.strides, spec.pads, rhs_dilation=spec.dilation,
                                  dimension_numbers=_DIMENSION_NUMBERS, feature_group_count=spec.groups)


def _row_dilated_conv(x: jnp.ndarray, kernel: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """`_xla_conv` with the input rows dilated by 2 and row stride, dilation and padding doubled.

  Input row a sits at 2a of the dilated input; output row o, tap i reads dilated row
  2(o * stride + i * dilation - pad), i.e. input row o * stride + i * dilation - pad, as before.
  Same shapes as `_xla_conv`; XLA:CPU runs it with Eigen instead of single-threaded YNNPACK.
  """
  (sh, sw), ((top, bottom), cols), (dh, dw) = spec.strides, spec.pads, spec.dilation
  return lax.conv_general_dilated(x, kernel, (2 * sh, sw), ((2 * top, 2 * bottom), cols),
                                  lhs_dilation=(2, 1), rhs_dilation=(2 * dh, dw),
                                  dimension_numbers=_DIMENSION_NUMBERS, feature_group_count=spec.groups)


def _accumulation_dtype(dtype: Any) -> Any:
  """f32 for bf16/f16 inputs (what XLA:CPU's convolutions accumulate in), else the input dtype."""
  return jnp.promote_types(dtype, jnp.float32)


def _out_size(size: int, k: int, stride: int, pads: tuple[int, int], dilation: int) -> int:
  return (size + sum(pads) - (k - 1) * dilation - 1) // stride + 1


def _tap(xp: jnp.ndarray, i: int, j: int, out_hw: tuple[int, int], spec: _Spec) -> jnp.ndarray:
  """The padded-input window that kernel tap (i, j) sees: xp [N, Hp, Wp, C] -> [N, H', W', C]."""
  (sh, sw), (dh, dw), (ho, wo) = spec.strides, spec.dilation, out_hw
  start = (0, i * dh, j * dw, 0)
  limit = (xp.shape[0], i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, xp.shape[3])
  return lax.slice(xp, start, limit, (1, sh, sw, 1))


def _tap_sum_conv(x: jnp.ndarray, kernel: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """Single-input-channel convolution as a sum of kh*kw broadcast products: x [N, H, W, 1] -> [N, H', W', C_out]."""
  kh, kw = kernel.shape[:2]
  (top, bottom), (left, right) = spec.pads
  acc = _accumulation_dtype(x.dtype)
  xp = lax.pad(x.astype(acc), jnp.zeros((), acc), ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
  kernel = kernel.astype(acc)
  out_hw = tuple(_out_size(n, k, s, p, d) for n, k, s, p, d in
                 zip(x.shape[1:3], (kh, kw), spec.strides, spec.pads, spec.dilation))
  y = sum(_tap(xp, i, j, out_hw, spec) * kernel[i, j, 0] for i in range(kh) for j in range(kw))
  return y.astype(x.dtype)


def _col2im_input_grad(kernel: jnp.ndarray, dy: jnp.ndarray, x_shape: tuple[int, ...], spec: _Spec) -> jnp.ndarray:
  """Stride-1, ungrouped input gradient [N, H, W, C_in] as one matmul dy @ kernel^T -> [N, H', W', kh, kw, C_in],
  then each tap's columns padded back to that tap's input window and summed."""
  kh, kw = kernel.shape[:2]
  (ho, wo), (dh, dw) = dy.shape[1:3], spec.dilation
  (top, bottom), (left, right) = spec.pads
  hp, wp = x_shape[1] + top + bottom, x_shape[2] + left + right
  cols = lax.dot_general(dy, kernel, (((3,), (3,)), ((), ())), preferred_element_type=_accumulation_dtype(dy.dtype))
  zero = jnp.zeros((), cols.dtype)
  # Sum each kernel row's taps into its input row window, then the rows (fewer reads than all taps at once).
  rows = [sum(lax.pad(cols[:, :, :, i, j], zero, ((0, 0, 0), (0, 0, 0), (j * dw, wp - j * dw - wo, 0), (0, 0, 0)))
              for j in range(kw)) for i in range(kh)]
  total = sum(lax.pad(row, zero, ((0, 0, 0), (i * dh, hp - i * dh - ho, 0), (0, 0, 0), (0, 0, 0)))
              for i, row in enumerate(rows))
  return lax.pad(total, zero, ((0, 0, 0), (-top, -bottom, 0), (-left, -right, 0), (0, 0, 0))).astype(dy.dtype)


# Kernel choice on XLA:CPU, from scripts/bench_conv.py timings on a 2-core x86 machine.
# Plain convolutions with at most 16 input and output channels already run on Eigen; with at most
# _FEW_CHANNELS input channels, YNNPACK's forward beats Eigen's row-dilated one (RGB stems).
_FEW_CHANNELS = 4
# Up to this many input channels, a matmul plus col2im beats Eigen's stride-1 input gradient
# (LeNet's 6; the col2im sum costs kh * kw reads per input element, too many for strided stems).
_COL2IM_MAX_CHANNELS = 8
# Grouped kernel gradients: one convolution per group up to this many groups; beyond, XLA's
# batch-group decomposition (groups x the FLOPs, as plain XLA does).
_MAX_SPLIT_GROUPS = 8
# The batch is the feature dimension of the kernel-gradient convolution: in chunks of
# _KERNEL_GRAD_CHUNK images (and <= 16 output channels) YNNPACK declines the plain form. For
# convolutions with <= 16 channels, Eigen runs the chunks 25-35% faster than the row-dilated form
# of the whole batch; at most _MAX_KERNEL_GRAD_CHUNKS chunks, to keep the graph small.
_KERNEL_GRAD_CHUNK = 16
_MAX_KERNEL_GRAD_CHUNKS = 32
# Inputs with at least this many channels are stored by `_materialized` for the kernel gradient.
_MATERIALIZE_MIN_CHANNELS = 16


# The native kernels (spec.native) compute kernel gradients up to _NATIVE_MAX_KERNEL_GRAD_CHANNELS
# channels in and out (3x3, batch 32: 128 ch at 28x28 26 ms vs Eigen's 48, 256 at 14x14 26 vs 32,
# 512 at 7x7 51 vs 32); forward passes up to
# _NATIVE_MAX_CHANNELS channels in and out (beyond, Eigen's GEMM is faster: 256 channels at 8x8,
# 27 ms vs 33); input gradients with 2 or more input channels by scatter (`native_cpu.input_grad`)
# when strided or with fewer than _NATIVE_INPUT_GRAD_MIN_CHANNELS input channels and the kernel is
# small enough (ResNet-20's 16 -> 32 stride-2 layer 4.7 -> 2.1 ms, LeNet's 6-channel layer 1.1 ->
# 0.5 ms), else at stride 1 up to _NATIVE_MAX_CHANNELS as the forward kernel on dy.
_NATIVE_INPUT_GRAD_MIN_CHANNELS = 16
_NATIVE_MAX_CHANNELS = 64
_NATIVE_MAX_KERNEL_GRAD_CHANNELS = 256


def _native_kernel_grad(x: jnp.ndarray, kernel_channels: int, spec: _Spec) -> bool:
  return spec.native and max(x.shape[3], kernel_channels) <= _NATIVE_MAX_KERNEL_GRAD_CHANNELS


def _in_f32(fn: Callable[..., jnp.ndarray], out_dtype: Any, a: jnp.ndarray, b: jnp.ndarray, *static) -> jnp.ndarray:
  """fn(a, b, *static) on f32 copies of a and b (the native kernels are f32), cast to out_dtype."""
  return fn(a.astype(jnp.float32), b.astype(jnp.float32), *static).astype(out_dtype)


def _native_grad(fn: Callable[..., jnp.ndarray], primal: jnp.ndarray, a: jnp.ndarray, b: jnp.ndarray,
                 *static) -> jnp.ndarray:
  """The cotangent of `primal` from a native kernel: fn(a, b, *static) in f32, in primal's dtype and
  summed over the shard_map axes it varies over and primal does not."""
  return native_cpu.match_varying(_in_f32(fn, primal.dtype, a, b, *static), primal)


def _eigen_already(cin: int, cout: int) -> bool:
  """Whether XLA:CPU runs the plain convolution with Eigen (YNNPACK declines <= 16 channels)."""
  return max(cin, cout) <= 16


def _forward(x: jnp.ndarray, kernel: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """x [N, H, W, C_in], kernel [kh, kw, C_in/groups, C_out] -> [N, H', W', C_out]."""
  cin, cout = x.shape[3], kernel.shape[3]
  if spec.native and max(cin, cout) <= _NATIVE_MAX_CHANNELS:
    return _in_f32(native_cpu.forward, x.dtype, x, kernel, spec.strides, spec.pads, spec.dilation)
  if cin == 1:
    return _tap_sum_conv(x, kernel, spec)
  if _eigen_already(cin, cout) or cin <= _FEW_CHANNELS:
    return _xla_conv(x, kernel, spec)
  return _row_dilated_conv(x, kernel, spec)


def _input_grad(x: jnp.ndarray, kernel: jnp.ndarray, dy: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """dL/dx [N, H, W, C_in] from dy [N, H', W', C_out]."""
  cin, cout = x.shape[3], kernel.shape[3]
  if spec.native and cin > 1:
    scatter = native_cpu.scatter_fits(kernel.shape[:2], cin, spec.dilation[1])
    if scatter and (spec.strides != (1, 1) or cin < _NATIVE_INPUT_GRAD_MIN_CHANNELS):
      return _native_grad(native_cpu.input_grad, x, dy, kernel, x.shape[1:3], spec.strides, spec.pads,
                          spec.dilation)
    if spec.strides == (1, 1) and max(cin, cout) <= _NATIVE_MAX_CHANNELS:
      return _native_grad(native_cpu.input_grad_stride1, x, dy, kernel, spec.pads, spec.dilation)
  if cin <= _COL2IM_MAX_CHANNELS and spec.groups == 1 and spec.strides == (1, 1):
    return _col2im_input_grad(kernel, dy, x.shape, spec)
  # For strides > 1 the transposed convolution has base dilation, so it runs on Eigen as it is.
  plain = _eigen_already(cin, cout) or spec.strides != (1, 1)
  conv = _xla_conv if plain else _row_dilated_conv
  return jax.linear_transpose(lambda x_: conv(x_, kernel, spec), x)(dy)[0]


def _kernel_grad(x: jnp.ndarray, kernel: jnp.ndarray, dy: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """dL/dkernel [kh, kw, C_in/groups, C_out] from dy [N, H', W', C_out]."""
  if _native_kernel_grad(x, kernel.shape[3], spec):
    return _native_grad(native_cpu.kernel_grad, kernel, x, dy, kernel.shape[:2], spec.strides, spec.pads,
                        spec.dilation)
  if 1 < spec.groups <= _MAX_SPLIT_GROUPS:
    ungrouped = spec._replace(groups=1)
    return jnp.concatenate([_kernel_grad(xg, kg, dg, ungrouped) for xg, kg, dg in
                            zip(jnp.split(x, spec.groups, 3), jnp.split(kernel, spec.groups, 3),
                                jnp.split(dy, spec.groups, 3))], axis=3)
  n, chunk = x.shape[0], _KERNEL_GRAD_CHUNK
  if _eigen_already(x.shape[3], kernel.shape[3]) and n <= chunk * _MAX_KERNEL_GRAD_CHUNKS:
    return sum(jax.linear_transpose(lambda k_, xc=x[i:i + chunk]: _xla_conv(xc, k_, spec), kernel)(dy[i:i + chunk])[0]
               for i in range(0, n, chunk))
  return jax.linear_transpose(lambda k_: _row_dilated_conv(x, k_, spec), kernel)(dy)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cpu_conv(x: jnp.ndarray, kernel: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """Convolution for XLA:CPU: x [N, H, W, C_in], kernel [kh, kw, C_in/groups, C_out] -> [N, H', W', C_out]."""
  return _forward(x, kernel, spec)


def _materialized(x: jnp.ndarray) -> jnp.ndarray:
  """x [N, H, W, C] as the result of a matmul by the identity (exact for finite values), for C >= 16.

  The kernel gradient reads x transposed ([C, H, W, N] for Eigen). When x is the end of an
  elementwise chain -- a ResNet's residual stream, relu(bn(conv) + shortcut) block after block --
  XLA:CPU fuses the whole chain into that transpose and recomputes it there, reading every level's
  inputs in transposed order (ResNet-20, batch 128: 160 ms of transposes per step). A matmul is
  never fused into its consumers, so the transpose reads one stored tensor instead (39 ms); it costs
  2 C FLOPs per element, a ninth of a 3x3 C -> C convolution's forward pass.
  (`lax.optimization_barrier` does not do this: XLA:CPU removes barriers before fusion.)
  """
  if x.shape[3] < _MATERIALIZE_MIN_CHANNELS:
    return x
  return lax.dot_general(x, jnp.eye(x.shape[3], dtype=x.dtype), (((3,), (0,)), ((), ())))


def _cpu_conv_fwd(x, kernel, spec):
  if not _native_kernel_grad(x, kernel.shape[3], spec):
    x = _materialized(x)
  return _forward(x, kernel, spec), (x, kernel)


def _cpu_conv_bwd(spec, residuals, dy):
  x, kernel = residuals
  return _input_grad(x, kernel, dy, spec), _kernel_grad(x, kernel, dy, spec)


_cpu_conv.defvjp(_cpu_conv_fwd, _cpu_conv_bwd)


def _pointwise_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], pads: Pads,
                    groups: int) -> jnp.ndarray:
  """1x1 convolution as pad, strided slice and matmul: x [N, H, W, C_in], kernel [1, 1, C_in/groups, C_out]."""
  if any(p != (0, 0) for p in pads):
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  if strides != (1, 1):
    x = lax.slice(x, (0, 0, 0, 0), x.shape, (1, *strides, 1))
  n, h, w, cin = x.shape
  cout = kernel.shape[-1]
  x = x.reshape(n, h, w, groups, cin // groups)
  kernel = kernel.reshape(cin // groups, groups, cout // groups)
  # [N, H, W, G, C_in/G] x [C_in/G, G, C_out/G] -> [G, N, H, W, C_out/G]
  y = lax.dot_general(x, kernel, (((4,), (0,)), ((3,), (1,))), preferred_element_type=_accumulation_dtype(x.dtype))
  return jnp.moveaxis(y, 0, 3).reshape(n, h, w, cout).astype(x.dtype)


def conv2d(x: jnp.ndarray, kernel: jnp.ndarray, strides: Union[int, Sequence[int]] = 1,
           padding: PaddingLike = "SAME", dilation: Union[int, Sequence[int]] = 1,
           feature_group_count: int = 1, impl: Optional[str] = None) -> jnp.ndarray:
  """2-D convolution, x [N, H, W, C_in], kernel [kh, kw, C_in/groups, C_out] -> [N, H', W', C_out].

  Same result as `lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
  dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=...)`; `impl` is described in
  the module docstring.
  """
  strides, dilation = _pair(strides), _pair(dilation)
  pads = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides, dilation)
  impl = resolve_impl(impl)
  if impl == "xla":
    return _xla_conv(x, kernel, _Spec(strides, pads, dilation, feature_group_count))
  if kernel.shape[:2] == (1, 1):
    return _pointwise_conv(x, kernel, strides, pads, feature_group_count)
  native = impl == "native" and feature_group_count == 1
  return _cpu_conv(x, kernel, _Spec(strides, pads, dilation, feature_group_count, native))


class Conv(nn.Module):
  """2-D convolution, NHWC -> NHWC, kernel HWIO; same parameters as `nn.Conv`.

  `impl` picks the implementation ("auto", "xla", "cpu"; None reads $RESEARCH_CONV_IMPL, default
  "auto"); see the module docstring.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Union[int, Sequence[int]] = 1
  padding: PaddingLike = "SAME"
  kernel_dilation: Union[int, Sequence[int]] = 1
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Any] = nn.initializers.zeros_init()
  impl: Optional[str] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C_in] -> [N, H', W', features]. Parameters: kernel [kh, kw, C_in/groups, features], bias [features]."""
    kh, kw = self.kernel_size
    cin = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (kh, kw, cin // self.feature_group_count, self.features),
                        self.param_dtype)
    dtype = self.dtype or x.dtype
    y = conv2d(x.astype(dtype), kernel.astype(dtype), self.strides, self.padding, self.kernel_dilation,
               self.feature_group_count, self.impl)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + bias.astype(dtype)
    return y
