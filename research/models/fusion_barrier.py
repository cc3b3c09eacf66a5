"""`relu_barrier(x)`: relu(x), computed once and kept in memory on the native CPU path.

Why. XLA:CPU fuses cheap elementwise producers into each of their consumers, duplicating them.
A residual stream -- out_k = relu(bn(conv(.)) + out_{k-1}), block after block -- is one long
elementwise chain between the convolutions (native FFI calls, which read stored inputs), so every
later consumer of out_k (the next block's residual add, the backward pass's ReLU masks) recomputes
the chain back to the stage's first block, reading every block's convolution output again:
ResNet-50 (batch 8, 224) moved 9.0 GB a step through its elementwise fusions, a stage-1 block
reading four tensors of 25.7 MB to write one. `lax.optimization_barrier` does not stop this
(XLA:CPU removes barriers before fusion). An FFI call does: research.models.native_cpu.store, an
identity whose result aliases its operand, so it moves nothing. The gradient is relu's,
dy * (x > 0), with the mask read from the stored result (relu(x) > 0 exactly where x > 0; NaN
gives 0 either way), so the backward pass reads one stored tensor instead of recomputing x.

Off the native path (GPU, TPU, `RESEARCH_CONV_IMPL=xla` or `cpu`, other dtypes) `relu_barrier` is
`jax.nn.relu` and the program is unchanged.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from research.models import cpu_dispatch


@jax.custom_vjp
def _stored_relu(x: jnp.ndarray) -> jnp.ndarray:
  return cpu_dispatch.native_module().store(jax.nn.relu(x))


def _stored_relu_fwd(x):
  y = _stored_relu(x)
  return y, y


def _stored_relu_bwd(y, dy):
  return (jnp.where(y > 0, dy, jnp.zeros_like(dy)),)


_stored_relu.defvjp(_stored_relu_fwd, _stored_relu_bwd)


def relu_barrier(x: jnp.ndarray) -> jnp.ndarray:
  """relu(x) for x of any shape; see the module docstring for what changes on the native CPU path."""
  if not cpu_dispatch.native_f32(x.dtype):
    return jax.nn.relu(x)
  return _stored_relu(x)
