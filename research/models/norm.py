"""BatchNorm with a two-pass training step: the layer every model in the project uses.

`BatchNorm` is a drop-in for `flax.linen.BatchNorm` over the last axis (the features), with its
fields, variables (params `scale`, `bias`; batch_stats `mean`, `var`), fast-variance statistics
(var = E[x^2] - E[x]^2, clipped at 0, in f32), running-average update and output
(y = (x - mean) * rsqrt(var + epsilon) * scale + bias). What differs is how training mode runs.
XLA differentiates flax's version op by op: two reductions for the statistics, the centred input
stored for the backward pass, two more reductions and several elementwise passes there. Here
`batch_norm_train` is a `jax.custom_vjp` with the textbook gradient:
  forward:  (sum x, sum x^2) per channel in one pass, then y (XLA fuses it into what follows);
  backward: (sum dy, sum dy * x) per channel in one pass, then
            dx = scale * inv * (dy - mean(dy) - x_hat * mean(dy * x_hat)),
            dscale = sum(dy * x_hat), dbias = sum(dy),   x_hat = (x - mean) * inv.
The per-channel sums run on research.models.native_cpu's kernel where research.models.cpu_dispatch
says so (the "native" family, f32 inputs), else as jnp reductions. Batch
statistics are over the global batch under the training core's data parallelism, as flax's.
The statistics outputs are not differentiated (they feed the running averages only).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from research.models import cpu_dispatch, manual_axes


def _channel_sums(a: jnp.ndarray, b: jnp.ndarray, native: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(sum a, sum a * b) over every axis but the last, in f32: a, b [..., C] -> ([C], [C])."""
  if native:
    sums = cpu_dispatch.native_module().channel_sums(a, b)
    return sums[0], sums[1]
  axes = tuple(range(a.ndim - 1))
  a32, b32 = a.astype(jnp.float32), b.astype(jnp.float32)
  return jnp.sum(a32, axes), jnp.sum(a32 * b32, axes)


def _normalize(x: jnp.ndarray, mean: jnp.ndarray, mul: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
  """(x - mean) * mul + bias in f32 (flax's order of operations); per-channel [C] arguments."""
  return (x.astype(jnp.float32) - mean) * mul + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray, epsilon: float,
                     native: bool) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Training-mode BatchNorm over the last axis: x [..., C], scale, bias [C] -> (y f32 [..., C],
  batch mean [C], biased batch variance [C])."""
  return _batch_norm_train_fwd(x, scale, bias, epsilon, native)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon, native):
  count = x.size // x.shape[-1]
  total, squares = _channel_sums(x, x, native)
  mean = total / count
  var = jnp.maximum(0.0, squares / count - mean * mean)
  inv = lax.rsqrt(var + epsilon)
  y = _normalize(x, mean, inv * scale, bias)
  return (y, mean, var), (x, mean, inv, scale)


def _batch_norm_train_bwd(epsilon, native, residuals, cotangents):
  del epsilon
  x, mean, inv, scale = residuals
  dy = cotangents[0]  # the statistics' cotangents are dropped (see the module docstring)
  count = x.size // x.shape[-1]
  dbias, dy_x = _channel_sums(dy, x, native)
  dscale = inv * (dy_x - mean * dbias)  # sum(dy * x_hat)
  # dx = a * dy + b * x + c per channel: one fused pass over dy and x.
  a = scale * inv
  b = -a * inv * dscale / count
  c = -a * dbias / count - b * mean
  dx = (dy.astype(jnp.float32) * a + x.astype(jnp.float32) * b + c).astype(x.dtype)
  match = manual_axes.match_varying
  return match(dx, x), match(dscale.astype(scale.dtype), scale), match(dbias.astype(scale.dtype), scale)


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.Module):
  """Drop-in for `flax.linen.BatchNorm` (axis -1): x [..., C] -> [..., C]; see the module docstring."""

  use_running_average: Optional[bool] = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Callable[..., Any] = nn.initializers.zeros
  scale_init: Callable[..., Any] = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jnp.ndarray, use_running_average: Optional[bool] = None) -> jnp.ndarray:
    use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    params = []
    scale = jnp.ones(features, jnp.float32)
    if self.use_scale:
      scale = self.param("scale", self.scale_init, features, self.param_dtype)
      params.append(scale)
    bias = jnp.zeros(features, jnp.float32)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, features, self.param_dtype)
      params.append(bias)
    dtype = self.dtype or jnp.result_type(x, *params)
    if use_running_average:
      y = _normalize(x, ra_mean.value, lax.rsqrt(ra_var.value + self.epsilon) * scale, bias)
      return y.astype(dtype)
    native = cpu_dispatch.native_f32(x.dtype)
    y, mean, var = batch_norm_train(x, scale.astype(jnp.float32), bias.astype(jnp.float32), self.epsilon, native)
    if not self.is_initializing():
      mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(dtype)
