"""The convolution layer every model in the project uses, with a fast path on CPU.

Layout: NHWC inputs and outputs, HWIO kernels ([kh, kw, C_in / groups, C_out]), as `flax.linen.Conv`.

Why a CPU path (issue 11). In jax 0.10, XLA:CPU hands every 2-D f32 convolution with more than 16
input or output features to YNNPACK (its `individual_convolution` library fusion). That kernel runs
on one thread, and for the weight gradient -- a convolution whose "kernel" is the whole output
gradient, with the batch as contraction -- it is about 8x slower than a matmul of the same FLOPs
(3x3, batch 128, 32x32, 64->64: forward 0.33 s, input gradient 0.34 s, weight gradient 2.85 s,
matmul 0.15 s). The other XLA:CPU convolution, Eigen's, is multi-threaded and runs all three at
about matmul speed, but YNNPACK takes precedence whenever it accepts the op. YNNPACK refuses
convolutions with base (lhs) dilation, so the CPU path writes every convolution with its input
rows "dilated" by two and the row stride, row kernel dilation and row padding doubled: the taps
land on the same input elements, the result is identical, and Eigen runs it (no extra FLOPs).

What the CPU path does, per kernel shape (every stride, padding, dilation and group count works;
tests/test_conv.py checks values and both gradients against `lax.conv_general_dilated`):
  * 1x1 kernels: a strided slice and a matmul (`dot_general`); gradients by autodiff.
  * larger kernels: a `jax.custom_vjp` whose forward and weight gradient are the row-dilated
    convolution above, and whose input gradient is the transpose of the row-dilated convolution
    for stride 1, or of the plain one for strides > 1 (that transpose already has base dilation,
    so Eigen runs it; transposing the row-dilated form there would waste work on zeros).
Grouped and depthwise convolutions take the same path (Eigen handles `feature_group_count`).
bf16 inputs are computed in f32 by XLA:CPU either way.

Choice of implementation: `impl` argument / `Conv.impl` field, else the environment variable
`RESEARCH_CONV_IMPL`, else "auto". "auto" takes the CPU path when `jax.default_backend()` is "cpu"
at trace time and plain `lax.conv_general_dilated` otherwise (cuDNN is already fast on GPU).
"xla" and "cpu" force one. Parameters are the same whichever runs.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

PaddingLike = Union[str, int, Sequence[Union[int, tuple[int, int]]]]
Pads = tuple[tuple[int, int], tuple[int, int]]

IMPL_ENV_VAR = "RESEARCH_CONV_IMPL"
IMPLS = ("auto", "xla", "cpu")
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def resolve_impl(impl: Optional[str] = None) -> str:
  """Returns "xla" or "cpu": `impl`, else $RESEARCH_CONV_IMPL, else "auto" (CPU path on the CPU backend)."""
  impl = impl or os.environ.get(IMPL_ENV_VAR) or "auto"
  if impl not in IMPLS:
    raise ValueError(f"Unknown convolution implementation {impl!r}; expected one of {IMPLS} "
                     f"(argument `impl` or ${IMPL_ENV_VAR}).")
  if impl == "auto":
    return "cpu" if jax.default_backend() == "cpu" else "xla"
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


def _xla_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], pads: Pads,
              dilation: tuple[int, int], groups: int) -> jnp.ndarray:
  """lax.conv_general_dilated: x [N, H, W, C_in], kernel [kh, kw, C_in/groups, C_out] -> [N, H', W', C_out]."""
  return lax.conv_general_dilated(x, kernel, strides, pads, rhs_dilation=dilation,
                                  dimension_numbers=_DIMENSION_NUMBERS, feature_group_count=groups)


def _row_dilated_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], pads: Pads,
                      dilation: tuple[int, int], groups: int) -> jnp.ndarray:
  """`_xla_conv` with the input rows dilated by 2 and row stride, dilation and padding doubled.

  Input row a sits at 2a of the dilated input; output row o, tap i reads dilated row
  2(o * stride + i * dilation - pad), i.e. input row o * stride + i * dilation - pad, as before.
  Same shapes as `_xla_conv`; XLA:CPU runs it with Eigen instead of single-threaded YNNPACK.
  """
  (sh, sw), (dh, dw), ((top, bottom), cols) = strides, dilation, pads
  return lax.conv_general_dilated(x, kernel, (2 * sh, sw), ((2 * top, 2 * bottom), cols),
                                  lhs_dilation=(2, 1), rhs_dilation=(2 * dh, dw),
                                  dimension_numbers=_DIMENSION_NUMBERS, feature_group_count=groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _cpu_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], pads: Pads,
              dilation: tuple[int, int], groups: int) -> jnp.ndarray:
  """Convolution for XLA:CPU: x [N, H, W, C_in], kernel [kh, kw, C_in/groups, C_out] -> [N, H', W', C_out]."""
  return _row_dilated_conv(x, kernel, strides, pads, dilation, groups)


def _cpu_conv_fwd(x, kernel, strides, pads, dilation, groups):
  return _row_dilated_conv(x, kernel, strides, pads, dilation, groups), (x, kernel)


def _cpu_conv_bwd(strides, pads, dilation, groups, residuals, dy):
  """Input gradient [N, H, W, C_in] and kernel gradient [kh, kw, C_in/groups, C_out] from dy [N, H', W', C_out]."""
  x, kernel = residuals
  input_conv = _row_dilated_conv if strides == (1, 1) else _xla_conv
  dx, = jax.linear_transpose(lambda x_: input_conv(x_, kernel, strides, pads, dilation, groups), x)(dy)
  dkernel, = jax.linear_transpose(
      lambda k_: _row_dilated_conv(x, k_, strides, pads, dilation, groups), kernel)(dy)
  return dx, dkernel


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
  y = lax.dot_general(x, kernel, (((4,), (0,)), ((3,), (1,))))
  return jnp.moveaxis(y, 0, 3).reshape(n, h, w, cout)


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
  if resolve_impl(impl) == "xla":
    return _xla_conv(x, kernel, strides, pads, dilation, feature_group_count)
  if kernel.shape[:2] == (1, 1):
    return _pointwise_conv(x, kernel, strides, pads, feature_group_count)
  return _cpu_conv(x, kernel, strides, pads, dilation, feature_group_count)


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
