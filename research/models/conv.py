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
the rules are research.models.cpu_dispatch's):
  * 1x1 kernels: pad, strided slice and one matmul (`dot_general`); the input gradient by
    autodiff, the kernel gradient (ungrouped) as one matmul x^T dy in the kernel's layout.
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
(direct, register-blocked, im2col-free; built from C++ on first use) compute, for ungrouped f32
convolutions, the forward pass and stride-1 input gradient up to 128 channels (32 with an AVX2
build, except RGB stems' forward passes: 2-4 input channels, up to 128 output channels on either
build; one-input-channel forward passes with output pixels in the vector lanes), the kernel
gradient up to 256 channels (1x1 kernels: up to 1024, their forward pass and input gradient
staying matmuls), strided or few-channel input gradients by scatter, and strided ones too wide
for it as one stride-1 convolution of dy per output phase (`_phase_input_grad`);
everything else -- groups, wider layers -- goes the XLA-only way above, with the input of an XLA
kernel gradient kept by the native store rather than an identity matmul
(cpu_dispatch.conv_plan says which, per layer). bf16 inputs are computed in f32 and returned as bf16.

Choice of implementation: research.models.cpu_dispatch decides, per layer (`conv_plan`), from the
`impl` argument / `Conv.impl` field, `cpu_dispatch.forced_impl`, $RESEARCH_CONV_IMPL or "auto"
(native on CPU when the kernels build, plain XLA elsewhere). Parameters are the same whichever runs.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from research.models import cpu_dispatch, manual_axes
from research.models.cpu_dispatch import ConvPlan

PaddingLike = Union[str, int, Sequence[Union[int, tuple[int, int]]]]
Pads = tuple[tuple[int, int], tuple[int, int]]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


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
  groups, the plan cpu_dispatch chose)."""
  strides: tuple[int, int]
  pads: Pads
  dilation: tuple[int, int]
  groups: int
  plan: ConvPlan


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


# Kernel gradients of convolutions with <= 16 channels run on chunks of this many images (see
# cpu_dispatch: in such chunks YNNPACK declines the plain form and Eigen runs it).
_KERNEL_GRAD_CHUNK = 16


def _in_f32(fn: Callable[..., jnp.ndarray], out_dtype: Any, a: jnp.ndarray, b: jnp.ndarray, *static) -> jnp.ndarray:
  """fn(a, b, *static) on f32 copies of a and b (the native kernels are f32), cast to out_dtype."""
  return fn(a.astype(jnp.float32), b.astype(jnp.float32), *static).astype(out_dtype)


def _native_grad(fn: Callable[..., jnp.ndarray], primal: jnp.ndarray, a: jnp.ndarray, b: jnp.ndarray,
                 *static) -> jnp.ndarray:
  """The cotangent of `primal` from a native kernel: fn(a, b, *static) in f32, in primal's dtype and
  summed over the shard_map axes it varies over and primal does not."""
  return manual_axes.match_varying(_in_f32(fn, primal.dtype, a, b, *static), primal)


def _forward(x: jnp.ndarray, kernel: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """x [N, H, W, C_in], kernel [kh, kw, C_in/groups, C_out] -> [N, H', W', C_out]."""
  how = spec.plan.forward
  if how == "matmul":
    return _pointwise_conv(x, kernel, spec.strides, spec.pads, spec.groups)
  if how == "native":
    return _in_f32(cpu_dispatch.native_module().forward, x.dtype, x, kernel, spec.strides, spec.pads, spec.dilation)
  if how == "tap_sum":
    return _tap_sum_conv(x, kernel, spec)
  return (_xla_conv if how == "xla" else _row_dilated_conv)(x, kernel, spec)


def _input_grad(x: jnp.ndarray, kernel: jnp.ndarray, dy: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """dL/dx [N, H, W, C_in] from dy [N, H', W', C_out]."""
  how = spec.plan.input_grad
  if how == "native_scatter":
    return _native_grad(cpu_dispatch.native_module().input_grad, x, dy, kernel, x.shape[1:3], spec.strides,
                        spec.pads, spec.dilation)
  if how == "native_stride1":
    return _native_grad(cpu_dispatch.native_module().input_grad_stride1, x, dy, kernel, spec.pads, spec.dilation)
  if how == "col2im":
    return _col2im_input_grad(kernel, dy, x.shape, spec)
  if how in ("xla_flipped", "row_dilated_flipped"):
    return _flipped_input_grad(x, kernel, dy, spec)
  if how in ("native_phases", "row_dilated_phases"):
    return _phase_input_grad(x, kernel, dy, spec)
  conv = {"xla": _xla_conv, "row_dilated": _row_dilated_conv, "matmul": _forward}[how]
  return jax.linear_transpose(lambda x_: conv(x_, kernel, spec), x)(dy)[0]


def _flipped_kernel(kernel: jnp.ndarray) -> jnp.ndarray:
  """kernel [kh, kw, C_in, C_out] -> [kh, kw, C_out, C_in], taps mirrored, by the native kernel
  (computed in f32, returned in kernel's dtype)."""
  return cpu_dispatch.native_module().flip_kernel(kernel.astype(jnp.float32)).astype(kernel.dtype)


def _flipped_input_grad(x: jnp.ndarray, kernel: jnp.ndarray, dy: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """dL/dx [N, H, W, C_in] as the forward convolution of dy with the kernel flipped by the native
  kernel ([kh, kw, C_out, C_in], taps mirrored), ungrouped: stride 1 row-dilated (Eigen), strided
  with dy dilated by the strides, as JAX's transpose of `_xla_conv` / `_row_dilated_conv` but without
  XLA's flip of the kernel, which read every element from a new cache line (ResNet-50's 3x3
  512-channel kernels: 5.8-6.0 ms each against 0.6 ms)."""
  flipped = _flipped_kernel(kernel)
  pads = []
  for size, k, stride, dilation, (low, _), out in zip(x.shape[1:3], kernel.shape[:2], spec.strides,
                                                      spec.dilation, spec.pads, dy.shape[1:3]):
    span = (k - 1) * dilation + 1
    pads.append((span - 1 - low, size + low - (out - 1) * stride - 1))
  if spec.plan.input_grad == "row_dilated_flipped":  # stride 1
    return _row_dilated_conv(dy, flipped, spec._replace(pads=tuple(pads)))
  return lax.conv_general_dilated(dy, flipped, (1, 1), pads, lhs_dilation=spec.strides, rhs_dilation=spec.dilation,
                                  dimension_numbers=_DIMENSION_NUMBERS)


def _phase_input_grad(x: jnp.ndarray, kernel: jnp.ndarray, dy: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """dL/dx [N, H, W, C_in] of a strided, undilated, ungrouped convolution as sh * sw stride-1
  convolutions of dy, one per output phase, interleaved.

  Along one axis (stride s, padding P before, k taps): input element i = a + s * q (phase a in
  [0, s)) receives dy[o] * w[t] for o * s + t - P = i, i.e. the taps t = r + s * m with
  r = (a + P) mod s, from dy[q + (a + P) // s - m]: a stride-1 convolution of dy with the
  ceil((k - r) / s) taps r, r + s, ... mirrored, which are every s-th tap of the flipped kernel from
  (k - 1 - r) mod s on. The phases together do the forward pass's FLOPs, where the transposed
  convolution (dy dilated by the strides) multiplies s^2 times as many, most of them by zeros:
  ResNet-18's 3x3 64 -> 128 stride-2 layer at 32x32 (batch 128) took 74-88 ms that way, 4-5 times
  its forward pass. Each phase runs on the native forward kernel ("native_phases") or Eigen's
  row-dilated convolution ("row_dilated_phases", wider layers); the result is H and W rounded up
  to whole strides, interleaved by one reshape, then cut to x's size.
  """
  flipped = _flipped_kernel(kernel)
  n, c = x.shape[0], x.shape[3]
  axes = []  # per axis: for each phase a, (first flipped tap, taps, padding before, padding after)
  for size, k, s, (low, _), out in zip(x.shape[1:3], kernel.shape[:2], spec.strides, spec.pads, dy.shape[1:3]):
    blocks = -(-size // s)
    phases = []
    for a in range(s):
      r, q0 = (a + low) % s, (a + low) // s
      taps = -(-(k - r) // s) if r < k else 0
      before = taps - 1 - q0
      phases.append(((k - 1 - r) % s, taps, before, blocks + taps - 1 - out - before))
    axes.append((blocks, phases))
  (rows, row_phases), (cols, col_phases) = axes
  native_forward = spec.plan.input_grad == "native_phases"
  pieces = []
  for first_i, taps_i, top, bottom in row_phases:
    for first_j, taps_j, left, right in col_phases:
      if taps_i == 0 or taps_j == 0:
        pieces.append(jnp.zeros((n, rows, cols, c), dy.dtype))
        continue
      sub = flipped[first_i::spec.strides[0], first_j::spec.strides[1]]
      pads = ((top, bottom), (left, right))
      if native_forward:
        pieces.append(_in_f32(cpu_dispatch.native_module().forward, dy.dtype, dy, sub, (1, 1), pads, (1, 1)))
      else:
        pieces.append(_row_dilated_conv(dy, sub, _Spec((1, 1), pads, (1, 1), 1, spec.plan)))
  sh, sw = spec.strides
  grid = jnp.stack(pieces).reshape(sh, sw, n, rows, cols, c)
  dx = grid.transpose(2, 3, 0, 4, 1, 5).reshape(n, rows * sh, cols * sw, c)
  return dx[:, :x.shape[1], :x.shape[2]]


def _kernel_grad(x: jnp.ndarray, kernel: jnp.ndarray, dy: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """dL/dkernel [kh, kw, C_in/groups, C_out] from dy [N, H', W', C_out]."""
  how = spec.plan.kernel_grad
  if how == "native":
    return _native_grad(cpu_dispatch.native_module().kernel_grad, kernel, x, dy, kernel.shape[:2], spec.strides,
                        spec.pads, spec.dilation)
  if how == "matmul" and spec.groups == 1:
    return manual_axes.match_varying(_pointwise_kernel_grad(x, dy, spec), kernel)
  if spec.plan.split_groups:
    ungrouped = spec._replace(groups=1, plan=spec.plan._replace(split_groups=False))
    return jnp.concatenate([_kernel_grad(xg, kg, dg, ungrouped) for xg, kg, dg in
                            zip(jnp.split(x, spec.groups, 3), jnp.split(kernel, spec.groups, 3),
                                jnp.split(dy, spec.groups, 3))], axis=3)
  if how == "chunked":
    chunk = _KERNEL_GRAD_CHUNK
    return sum(jax.linear_transpose(lambda k_, xc=x[i:i + chunk]: _xla_conv(xc, k_, spec), kernel)(dy[i:i + chunk])[0]
               for i in range(0, x.shape[0], chunk))
  return jax.linear_transpose(lambda k_: _row_dilated_conv(x, k_, spec), kernel)(dy)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cpu_conv(x: jnp.ndarray, kernel: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """Convolution for XLA:CPU: x [N, H, W, C_in], kernel [kh, kw, C_in/groups, C_out] -> [N, H', W', C_out]."""
  return _forward(x, kernel, spec)


def _kept(x: jnp.ndarray, how: str) -> jnp.ndarray:
  """x [N, H, W, C] as the forward pass keeps it for the kernel gradient (`ConvPlan.kept_input`).

  The kernel gradient reads x transposed ([C, H, W, N] for Eigen). When x is the end of an
  elementwise chain -- a ResNet's residual stream, relu(bn(conv) + shortcut) block after block --
  XLA:CPU fuses the whole chain into that transpose and recomputes it there, reading every level's
  inputs in transposed order (ResNet-20, batch 128: 160 ms of transposes per step). Neither a
  matmul nor an FFI call is fused into its consumers, so the transpose reads one stored tensor
  instead (39 ms). "matmul": a matmul by the identity (exact for finite values), 2 C FLOPs an
  element, a ninth of a 3x3 C -> C convolution's forward pass; "store": the native store, which
  moves nothing. (`lax.optimization_barrier` does not do this: XLA:CPU removes barriers before
  fusion.)
  """
  if how == "store":
    return cpu_dispatch.native_module().store(x)
  if how == "matmul":
    return lax.dot_general(x, jnp.eye(x.shape[3], dtype=x.dtype), (((3,), (0,)), ((), ())))
  return x


def _cpu_conv_fwd(x, kernel, spec):
  x = _kept(x, spec.plan.kept_input)
  return _forward(x, kernel, spec), (x, kernel)


def _cpu_conv_bwd(spec, residuals, dy):
  x, kernel = residuals
  return _input_grad(x, kernel, dy, spec), _kernel_grad(x, kernel, dy, spec)


_cpu_conv.defvjp(_cpu_conv_fwd, _cpu_conv_bwd)


def _pointwise_input(x: jnp.ndarray, strides: tuple[int, int], pads: Pads) -> jnp.ndarray:
  """The pixels a 1x1 convolution reads: x [N, H, W, C] padded, then every stride-th row and column."""
  if any(p != (0, 0) for p in pads):
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  if strides != (1, 1):
    x = lax.slice(x, (0, 0, 0, 0), x.shape, (1, *strides, 1))
  return x


def _pointwise_kernel_grad(x: jnp.ndarray, dy: jnp.ndarray, spec: _Spec) -> jnp.ndarray:
  """dL/dkernel [1, 1, C_in, C_out] of an ungrouped 1x1 convolution: x^T dy over every pixel, as one
  matmul whose result is already in the kernel's layout. (Autodiff of the forward matmul computes
  dy^T x, [C_out, C_in], and XLA:CPU transposes it inside every consumer -- the optimizer update, the
  gradient statistics -- at a quarter of their speed: ResNet-50's 2048-channel layers.)"""
  x = _pointwise_input(x, spec.strides, spec.pads)
  axes = (0, 1, 2)
  grad = lax.dot_general(x, dy, ((axes, axes), ((), ())), preferred_element_type=_accumulation_dtype(x.dtype))
  return grad.reshape(1, 1, *grad.shape).astype(x.dtype)


def _pointwise_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], pads: Pads,
                    groups: int) -> jnp.ndarray:
  """1x1 convolution as pad, strided slice and matmul: x [N, H, W, C_in], kernel [1, 1, C_in/groups, C_out]."""
  x = _pointwise_input(x, strides, pads)
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
  plan = cpu_dispatch.conv_plan(x.shape, kernel.shape, strides, dilation, feature_group_count,
                                cpu_dispatch.resolve_impl(impl))
  spec = _Spec(strides, pads, dilation, feature_group_count, plan)
  if plan.forward == "xla" and plan.kernel_grad == "xla":
    return _xla_conv(x, kernel, spec)
  if plan.forward == "matmul" and plan.kernel_grad == "matmul" and feature_group_count > 1:
    return _pointwise_conv(x, kernel, strides, pads, feature_group_count)
  return _cpu_conv(x, kernel, spec)


class Conv(nn.Module):
  """2-D convolution, NHWC -> NHWC, kernel HWIO; same parameters as `nn.Conv`.

  `impl` picks the implementation family ("auto", "xla", "cpu", "native"; None: as
  research.models.cpu_dispatch.resolve_impl decides); see the module docstring.
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
