"""numpy's Philox generator, vectorized over stream positions: the draws of many per-example
generators at once, bit for bit.

research.data.pipeline gives stream element i the generator np.random.Generator(Philox(seed))
with counter [0, 0, 0, i] (Grain's `random_map` derivation). Its first draws come from one block
of Philox4x64-10: the counter is incremented (to [1, 0, 0, i]) and the block's 4 uint64 words are
the bit generator's next outputs. `first_block` computes that block for an array of positions in
numpy (the 64 x 64 -> 128-bit products from 32-bit halves); `bounded` and `uniform` turn words
into what Generator.integers(0, n) and Generator.random() return for them:
  integers(0, n), n <= 2**32: Lemire's method on one 32-bit half (the low half of a word first,
    then its high half, then the next word); rejected (about once in 2**32 draws for small n) where
    the low 32 bits of x * n fall below (2**32 - n) % n -- callers fall back to numpy there;
  random(): the next whole word (a buffered 32-bit half is skipped), (word >> 11) * 2**-53.
"""
from __future__ import annotations

import numpy as np

_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_MULTIPLIERS = (np.uint64(0xD2E7470EE14C6C93), np.uint64(0xCA5A826395121157))
_WEYL = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBB67AE8584CAA73B))
_ROUNDS = 10


def _mulhilo(a: np.uint64, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(high, low) 64-bit halves of the 128-bit products a * b (uint64)."""
  a_lo, a_hi = a & _LOW32, a >> _SHIFT32
  b_lo, b_hi = b & _LOW32, b >> _SHIFT32
  lo_lo, lo_hi, hi_lo = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo
  middle = (lo_lo >> _SHIFT32) + (lo_hi & _LOW32) + (hi_lo & _LOW32)
  high = a_hi * b_hi + (lo_hi >> _SHIFT32) + (hi_lo >> _SHIFT32) + (middle >> _SHIFT32)
  return high, a * b


def key_of(seed: int) -> tuple[np.uint64, np.uint64]:
  """The 128-bit key np.random.Philox(seed) uses."""
  key = np.random.Philox(seed).state["state"]["key"]
  return np.uint64(key[0]), np.uint64(key[1])


def first_block(key: tuple[np.uint64, np.uint64], positions: np.ndarray) -> tuple[np.ndarray, ...]:
  """The 4 uint64 words [n] that Generator(Philox) with this key and counter [0, 0, 0, position]
  outputs first, for positions int [n] >= 0."""
  positions = np.asarray(positions, np.uint64)
  zeros = np.zeros_like(positions)
  c0, c1, c2, c3 = zeros + np.uint64(1), zeros, zeros, positions
  k0, k1 = key
  with np.errstate(over="ignore"):  # uint64 arithmetic is modulo 2**64, as Philox's
    for round_ in range(_ROUNDS):
      if round_:
        k0, k1 = k0 + _WEYL[0], k1 + _WEYL[1]
      hi0, lo0 = _mulhilo(_MULTIPLIERS[0], c0)
      hi1, lo1 = _mulhilo(_MULTIPLIERS[1], c2)
      c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
  return c0, c1, c2, c3


def low_half(word: np.ndarray) -> np.ndarray:
  return word & _LOW32


def high_half(word: np.ndarray) -> np.ndarray:
  return word >> _SHIFT32


def bounded(half: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
  """(Generator.integers(0, n) int64 [m], rejected bool [m]) from 32-bit values uint64 [m]."""
  product = half * np.uint64(n)
  return (product >> _SHIFT32).astype(np.int64), (product & _LOW32) < np.uint64((2**32 - n) % n)


def uniform(word: np.ndarray) -> np.ndarray:
  """Generator.random() float64 [m] in [0, 1) from words uint64 [m]."""
  return (word >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
