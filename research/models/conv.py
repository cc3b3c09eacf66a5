"""The convolution layer every model in the project uses.

Placeholder: delegates to flax.linen.Conv (NHWC inputs, HWIO kernels). The CPU
fast path (issue 11) replaces the implementation behind the same interface.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

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
  def __call__(self, x):
    return nn.Conv(
        self.features, tuple(self.kernel_size), strides=self.strides, padding=self.padding,
        kernel_dilation=self.kernel_dilation, feature_group_count=self.feature_group_count,
        use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=self.kernel_init, bias_init=self.bias_init, name="conv")(x)
