"""Decoding of autoregressive models inside jit, with static shapes: greedy, beam search, sampling.

A model is seen through a step function `step_fn(state, tokens) -> (logits, state)`: tokens int32
[B] (the previous token of each sequence), logits [B, V] for the next one, and a state pytree
whose leaves all have the batch as leading axis (an LSTM carry). Every function runs a fixed
number of steps (`lax.scan`), so it jits once per shape.

Token conventions (as research.data.preprocess.Vocabulary): decoding starts from `bos`; a
live sequence never emits `pad` or `bos`; it is finished once it emits `eos`, and every position
after `eos` holds `pad`. Outputs hold the generated tokens only (no leading `bos`), `eos`
included when it was emitted within `max_length` steps.
"""
from __future__ import annotations

from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp

PyTree = Any
StepFn = Callable[[PyTree, jax.Array], Tuple[jax.Array, PyTree]]

NEG_INF = -1e9  # Log-probability of impossible continuations (finite: no inf - inf).


def _forbid(logits: jax.Array, tokens: tuple[int, ...]) -> jax.Array:
  """logits [..., V] with the given tokens set to NEG_INF."""
  return jnp.where(jnp.isin(jnp.arange(logits.shape[-1]), jnp.asarray(tokens)), NEG_INF, logits)


def greedy_decode(step_fn: StepFn, state: PyTree, batch_size: int, max_length: int, bos: int,
                  eos: int, pad: int = 0) -> jax.Array:
  """The most likely token at every step: tokens int32 [B, max_length], `pad` after `eos`."""

  def body(carry, _):
    state, prev, finished = carry
    logits, state = step_fn(state, prev)
    best = jnp.argmax(_forbid(logits.astype(jnp.float32), (pad, bos)), -1).astype(jnp.int32)
    token = jnp.where(finished, pad, best)
    return (state, token, finished | (token == eos)), token

  start = (state, jnp.full((batch_size,), bos, jnp.int32), jnp.zeros((batch_size,), bool))
  _, tokens = jax.lax.scan(body, start, None, length=max_length)
  return tokens.T


def beam_search(step_fn: StepFn, state: PyTree, batch_size: int, max_length: int, bos: int,
                eos: int, pad: int = 0, beam_size: int = 3, length_penalty: float = 0.0
                ) -> Tuple[jax.Array, jax.Array]:
  """Batched beam search.

  Each step extends every live beam by every token and keeps the `beam_size` best extensions by
  summed log-probability; a finished beam has one extension (`pad`, log-probability 0), so it
  stays finished with its score while it ranks in the top `beam_size`. At the end beams are
  ranked by score / length ** length_penalty (length: tokens up to and including `eos`; 0 keeps
  the raw sum, which favours short captions; ~0.7 is common). With beam_size 1 this is greedy
  decoding.

  Args:
    step_fn: see the module docstring; called on B * beam_size rows (state tiled per beam).
    state: the initial state, leaves [B, ...].
  Returns:
    tokens int32 [B, beam_size, max_length] and their normalized scores float32 [B, beam_size],
    best first.
  """
  k = beam_size
  state = jax.tree_util.tree_map(lambda x: jnp.repeat(x, k, axis=0), state)
  # Only beam 0 is live at the start, so the first step expands one hypothesis, not k copies.
  scores = jnp.tile(jnp.asarray([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch_size, 1))

  def body(carry, t):
    state, last, tokens, scores, finished = carry
    logits, state = step_fn(state, last.reshape(-1))
    logp = _forbid(jax.nn.log_softmax(logits.astype(jnp.float32), -1), (pad, bos))
    vocab = logp.shape[-1]
    logp = logp.reshape(batch_size, k, vocab)
    only_pad = jnp.where(jnp.arange(vocab) == pad, 0.0, NEG_INF)
    logp = jnp.where(finished[:, :, None], only_pad, logp)
    candidates = (scores[:, :, None] + logp).reshape(batch_size, k * vocab)
    scores, flat_index = jax.lax.top_k(candidates, k)
    beam, token = flat_index // vocab, (flat_index % vocab).astype(jnp.int32)
    rows = (jnp.arange(batch_size)[:, None] * k + beam).reshape(-1)
    state = jax.tree_util.tree_map(lambda x: x[rows], state)
    tokens = jnp.take_along_axis(tokens, beam[:, :, None], axis=1).at[:, :, t].set(token)
    finished = jnp.take_along_axis(finished, beam, axis=1) | (token == eos)
    return (state, token, tokens, scores, finished), None

  start = (state, jnp.full((batch_size, k), bos, jnp.int32),
           jnp.full((batch_size, k, max_length), pad, jnp.int32), scores, jnp.zeros((batch_size, k), bool))
  (_, _, tokens, scores, _), _ = jax.lax.scan(body, start, jnp.arange(max_length))
  lengths = jnp.maximum(jnp.sum(tokens != pad, -1), 1).astype(jnp.float32)
  normalized = scores / lengths ** length_penalty
  order = jnp.argsort(-normalized, axis=-1)
  return (jnp.take_along_axis(tokens, order[:, :, None], axis=1),
          jnp.take_along_axis(normalized, order, axis=1))


def sample(step_fn: StepFn, state: PyTree, first_tokens: jax.Array, length: int, rng: jax.Array,
           temperature: float = 1.0) -> jax.Array:
  """Ancestral sampling from softmax(logits / temperature): tokens int32 [B, length].

  first_tokens int32 [B] is fed first (e.g. the last character of a priming text). temperature
  < 1 sharpens the distribution (more likely, more repetitive), > 1 flattens it. No end token:
  every step samples.
  """

  def body(carry, key):
    state, prev = carry
    logits, state = step_fn(state, prev)
    token = jax.random.categorical(key, logits.astype(jnp.float32) / temperature, -1).astype(jnp.int32)
    return (state, token), token

  _, tokens = jax.lax.scan(body, (state, first_tokens.astype(jnp.int32)), jax.random.split(rng, length))
  return tokens.T
