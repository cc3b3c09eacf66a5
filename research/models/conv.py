"""The convolution layer every model in the project uses.

Reference implementation: lax.conv_general_dilated (NHWC inputs, HWIO kernels). The CPU
fast path (issue 11) replaces the implementation behind the same interface.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

PaddingLike = Union[str, int, Sequence[Union[int, tuple[int, int]]]]


class Conv(nn.Module):
  """2-D convolution, NHWC -> NHWC, kernel HWIO; same parameters as `nn.Conv`."""

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

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: [N, H, W, C_in] -> [N, H', W', features]. Parameters: kernel [kh, kw, C_in/groups, features], bias [features]."""
    kh, kw = self.kernel_size
    cin = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (kh, kw, cin // self.feature_group_count, self.features),
                        self.param_dtype)
    strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
    dilation = (self.kernel_dilation,) * 2 if isinstance(self.kernel_dilation, int) else tuple(self.kernel_dilation)
    padding = self.padding
    if isinstance(padding, int):
      padding = ((padding, padding), (padding, padding))
    elif not isinstance(padding, str):
      padding = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
    dtype = self.dtype or x.dtype
    y = lax.conv_general_dilated(
        x.astype(dtype), kernel.astype(dtype), window_strides=strides, padding=padding,
        rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=self.feature_group_count)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + bias.astype(dtype)
    return y
