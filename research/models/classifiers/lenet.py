"""LeNet-5 (LeCun et al. 1998), in the form used with 28x28 MNIST.

conv 5x5x6 (padding 2, so 28x28 keeps the classic 32x32 geometry) -> pool 2 -> conv 5x5x16 ->
pool 2 -> fc 120 -> fc 84 -> fc num_classes. 61,706 parameters for 10 classes. `kernel_init`
names the kernel initializers (research.models.initializers; default flax's lecun_normal).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from research.core.registry import MODELS
from research.models.conv import Conv
from research.models.initializers import kernel_initializers
from research.models.pooling import avg_pool, max_pool, sow_stage

_ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "sigmoid": nn.sigmoid}


@MODELS.register("lenet5")
class LeNet5(nn.Module):
  """images [N, 28, 28, C] (or [N, 32, 32, C] with first_padding=0) -> logits [N, num_classes].

  Attributes:
    num_classes: output classes.
    activation: 'relu' (default) or the original 'tanh' / 'sigmoid'.
    pooling: 'max' or the original subsampling 'avg'.
    first_padding: padding of the first convolution (2 for 28x28 inputs, 0 for 32x32).
    dropout_rate: dropout before the last two dense layers (0: none).
    kernel_init: kernel initializer spec, "SPEC" or "CONV_SPEC,DENSE_SPEC".
    dtype: compute dtype (parameters stay float32).
  """

  num_classes: int = 10
  activation: str = "relu"
  pooling: str = "max"
  first_padding: int = 2
  dropout_rate: float = 0.0
  kernel_init: str = "lecun_normal"
  dtype: Any = jnp.float32

  def _act_pool(self, act, pool, x: jnp.ndarray, name: str) -> jnp.ndarray:
    """pool(act(x)) with a 2x2 pool, sown as stage `name`. ReLU and max pooling commute (both
    monotone), so that case pools first: the ReLU and its gradient then touch a quarter of the
    elements (same values and gradients)."""
    if self.activation == "relu" and self.pooling == "max":
      return sow_stage(self, name, act(pool(x, (2, 2), strides=(2, 2))))
    return sow_stage(self, name, pool(act(x), (2, 2), strides=(2, 2)))

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    act = _ACTIVATIONS[self.activation]
    pool = max_pool if self.pooling == "max" else avg_pool
    conv_init, init = kernel_initializers(self.kernel_init)
    x = x.astype(self.dtype)
    x = self._act_pool(act, pool, Conv(6, (5, 5), padding=self.first_padding, kernel_init=conv_init,
                                       dtype=self.dtype, name="conv1")(x), "pool1")
    x = self._act_pool(act, pool, Conv(16, (5, 5), padding="VALID", kernel_init=conv_init, dtype=self.dtype,
                                       name="conv2")(x), "pool2")
    x = x.reshape(x.shape[0], -1)
    x = act(nn.Dense(120, kernel_init=init, dtype=self.dtype, name="fc1")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = act(nn.Dense(84, kernel_init=init, dtype=self.dtype, name="fc2")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=init, dtype=self.dtype, name="fc3")(x).astype(jnp.float32)
