"""Stacked LSTMs from flax.linen cells: one time step (`StackedLSTMCell`) and a whole sequence
under `nn.scan` (`LSTM`), with the same parameters, so a model trained on sequences (teacher
forcing) decodes step by step (greedy, beam search, sampling) without copying weights.

Conventions: inputs [N, T, D] (time second); the carry is a tuple of `num_layers` (c, h) pairs,
each [N, H]; outputs are the top layer's hidden states [N, T, H]. Dropout (rate `dropout`) is
applied between layers, not on the recurrent connections (Zaremba et al. 2014).
"""
from __future__ import annotations

from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Carry = Tuple[Tuple[jax.Array, jax.Array], ...]


class StackedLSTMCell(nn.Module):
  """One time step of `num_layers` LSTM layers: (carry, x [N, D]) -> (carry, h [N, H])."""

  features: int
  num_layers: int = 1
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry: Carry, x: jax.Array, train: bool = False) -> Tuple[Carry, jax.Array]:
    new_carry = []
    for i in range(self.num_layers):
      if i > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      layer_carry, x = nn.OptimizedLSTMCell(self.features, dtype=self.dtype, name=f"layer{i}")(carry[i], x)
      new_carry.append(layer_carry)
    return tuple(new_carry), x


class LSTM(nn.Module):
  """A stacked LSTM over sequences (`__call__`, scanned over time) or one step (`step`)."""

  features: int
  num_layers: int = 1
  dropout: float = 0.0
  dtype: Any = jnp.float32

  def setup(self):
    self.cell = StackedLSTMCell(self.features, self.num_layers, self.dropout, self.dtype)

  def initial_carry(self, batch_size: int) -> Carry:
    """Zero (c, h) for every layer, each float32 [batch_size, H]."""
    zeros = jnp.zeros((batch_size, self.features), jnp.float32)
    return tuple((zeros, zeros) for _ in range(self.num_layers))

  def __call__(self, carry: Carry, xs: jax.Array, train: bool = False) -> Tuple[Carry, jax.Array]:
    """(carry, xs [N, T, D]) -> (final carry, hidden states [N, T, H])."""
    scan = nn.scan(lambda cell, c, x: cell(c, x, train), variable_broadcast="params",
                   split_rngs={"params": False, "dropout": True}, in_axes=1, out_axes=1)
    return scan(self.cell, carry, xs)

  def step(self, carry: Carry, x: jax.Array, train: bool = False) -> Tuple[Carry, jax.Array]:
    """(carry, x [N, D]) -> (carry, h [N, H]): one time step, the same weights as `__call__`."""
    return self.cell(carry, x, train)
