"""Several datasets read as one random-access data source: a weighted mixture, or a concatenation.

Both sources return each member's examples unchanged plus two tags, so a task can tell which
dataset (and so which labels) an example comes from:
  MEMBER_KEY  int, the member's position in the list the source was built from
  INDEX_KEY   int, the example's index within that member

`MixtureSource` (training): member k with weight w_k > 0 is drawn with probability
p_k = w_k / sum(w). The mixture has L = ceil(max_k len_k / p_k) slots, the fewest in which every
member fits whole at its proportion; member k fills n_k = round(p_k L) of them (largest remainders,
so they sum to L) with its examples in order, cycling (a member smaller than its share repeats, a
larger one cannot occur). The training pipeline shuffles the L slots anew every epoch, so each
batch holds member k's examples in proportion p_k on average, and batch k is still a pure
function of (seed, k): resumable and independent of the device count.

`InterleavedSource` (evaluation): every example of every member exactly once, interleaved.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Sequence

import numpy as np

MEMBER_KEY = "mixture/member"
INDEX_KEY = "mixture/index"


def mixture_counts(lengths: Sequence[int], weights: Sequence[float]) -> np.ndarray:
  """Slots per member (int64 [K]): see the module docstring. Members of weight 0 get none."""
  weights = np.asarray(weights, np.float64)
  if len(weights) != len(lengths) or (weights < 0).any() or weights.sum() <= 0:
    raise ValueError(f"mixture weights {weights.tolist()} must be >= 0, one per member, not all 0")
  probs = weights / weights.sum()
  if any(n == 0 for n, p in zip(lengths, probs) if p > 0):
    raise ValueError(f"a mixture member of positive weight is empty (lengths {list(lengths)})")
  total = max(math.ceil(n / p - 1e-9) for n, p in zip(lengths, probs) if p > 0)
  exact = probs * total
  counts = np.floor(exact).astype(np.int64)
  order = np.argsort(-(exact - counts), kind="stable")
  counts[order[:total - counts.sum()]] += 1
  return counts


def _tagged(example: Dict[str, Any], member: int, index: int) -> Dict[str, Any]:
  return {**example, MEMBER_KEY: member, INDEX_KEY: index}


class MixtureSource:
  """A weighted mixture of random-access sources (module docstring)."""

  def __init__(self, sources: Sequence[Any], weights: Sequence[float]):
    self.sources = list(sources)
    self.counts = mixture_counts([len(s) for s in self.sources], weights)
    self._member = np.repeat(np.arange(len(self.sources)), self.counts)
    self._index = np.concatenate([np.arange(c) % max(len(s), 1) for s, c in zip(self.sources, self.counts)])

  def __len__(self) -> int:
    return len(self._member)

  def __getitem__(self, slot: int) -> Dict[str, Any]:
    member, index = int(self._member[slot]), int(self._index[slot])
    return _tagged(self.sources[member][index], member, index)


class InterleavedSource:
  """Every example of every member exactly once, the members interleaved in proportion to their
  sizes (member k's i-th example sits at relative position (i + 0.5) / len_k), so any run of
  consecutive positions, e.g. the first evaluation batch, holds some of each member. An empty
  member (e.g. `()`) contributes nothing."""

  def __init__(self, sources: Sequence[Any]):
    self.sources = list(sources)
    lengths = [len(s) for s in self.sources]
    relative = np.concatenate([(np.arange(n) + 0.5) / n for n in lengths if n] or [np.zeros(0)])
    members = np.concatenate([np.full(n, k) for k, n in enumerate(lengths) if n] or [np.zeros(0, np.int64)])
    indices = np.concatenate([np.arange(n) for n in lengths if n] or [np.zeros(0, np.int64)])
    order = np.argsort(relative, kind="stable")
    self._member, self._index = members[order].astype(np.int64), indices[order].astype(np.int64)

  def __len__(self) -> int:
    return len(self._member)

  def __getitem__(self, position: int) -> Dict[str, Any]:
    member, index = int(self._member[position]), int(self._index[position])
    return _tagged(self.sources[member][index], member, index)
