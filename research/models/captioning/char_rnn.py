"""char-RNN (Karpathy 2015): a character-level LSTM language model.

inputs int32 [N, T] character ids -> logits float32 [N, T, V], logits[:, t] predicting the
character after inputs[:, t]. Embedding (equivalent to char-rnn's one-hot input times a matrix),
`num_layers` LSTM layers with dropout between them and before the output layer. `prime` runs
the LSTM over a priming text and `decode_step` advances one character, for sampling.
"""
from __future__ import annotations

from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.core.registry import MODELS
from research.models.captioning.lstm import LSTM, Carry


@MODELS.register("char_rnn")
class CharRNN(nn.Module):
  """inputs int32 [N, T] -> logits float32 [N, T, vocab_size]."""

  vocab_size: int
  embed_dim: int = 64
  hidden_size: int = 256
  num_layers: int = 2
  dropout: float = 0.2
  dtype: Any = jnp.float32

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)
    self.lstm = LSTM(self.hidden_size, self.num_layers, self.dropout, self.dtype)
    self.logits = nn.Dense(self.vocab_size, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)

  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    _, hs = self.prime(inputs, train)
    return self.logits(self.drop(hs, deterministic=not train)).astype(jnp.float32)

  def prime(self, inputs: jax.Array, train: bool = False) -> Tuple[Carry, jax.Array]:
    """inputs [N, T] -> (carry after them, hidden states [N, T, H])."""
    return self.lstm(self.lstm.initial_carry(inputs.shape[0]), self.embed(inputs), train)

  def decode_step(self, carry: Carry, tokens: jax.Array) -> Tuple[jax.Array, Carry]:
    """(carry, previous characters int32 [B]) -> (next-character logits float32 [B, V], carry)."""
    carry, h = self.lstm.step(carry, self.embed(tokens))
    return self.logits(h).astype(jnp.float32), carry
