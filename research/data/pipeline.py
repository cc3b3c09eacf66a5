"""Grain input pipelines with a deterministic, resumable data order.

Training data is one infinite, indexable sequence of batches: the split is shuffled (a new
permutation every epoch, from `seed`), split across processes, augmented with a per-example RNG
derived from (seed, index), and batched. Batch k is therefore a pure function of (seed, k), and the
iterator's state is just the index of the next batch: a run resumed at step k starts at batch k
and sees exactly the data an uninterrupted run would.

Evaluation data covers the split exactly once: it is padded up to a multiple of the global batch
with copies of the first example whose `mask` is 0, so metrics weighted by `mask` count every
example once whatever the batch size.

absl flags: Grain's worker processes (num_workers > 0) read absl flags, which a library caller
(no app.run) has not parsed; `_to_iter` then marks them parsed. This is the only place outside the
commands (research/cli) that touches absl's flag state.
"""
from __future__ import annotations

import importlib
import itertools
import os
import sys
import threading
from typing import Any, Callable, Dict, Iterator, Optional

from absl import flags
import jax
import numpy as np

from research.data import philox

Example = Dict[str, Any]
TrainPreprocess = Callable[[Example, np.random.Generator], Example]
EvalPreprocess = Callable[[Example], Example]
# (source, source indices int [b], stream positions int [b], the stream's `ExampleRngs`) -> the
# batch that `TrainPreprocess` on each example with rngs(position) would give, stacked -- or None
# where it cannot (the examples are then preprocessed one by one).
BatchPreprocess = Callable[[Any, np.ndarray, np.ndarray, "ExampleRngs"], Optional[Example]]


def _grain() -> Any:
  """The grain module, imported on first use: it imports orbax (0.3-0.5 s together), which a run
  imports in threads while its train step compiles (research.core.train)."""
  return importlib.import_module("grain")


def resolve_num_workers(num_workers: int, source: Any) -> int:
  """Grain worker processes for `source`: `num_workers` if >= 0; for -1 (auto), one per core this
  process may run on for a source read from storage, 0 for one held in memory (decoded once,
  cheap to preprocess in-process)."""
  if num_workers >= 0:
    return num_workers
  return 0 if _in_memory(source) else len(os.sched_getaffinity(0))


def _to_iter(ds: grain.MapDataset, num_workers: int, in_memory: bool) -> grain.IterDataset:
  """Grain's iterator over `ds`: read ahead by 2 threads, or in the consuming thread for a source
  held in memory (its preprocessing is pure Python, so reader threads only contend for the GIL:
  lenet5_digits took 35 us an example with 2 threads, 25 with 1, 22 with none; the device step
  still overlaps it through JAX's asynchronous dispatch); with num_workers > 0 in worker processes."""
  grain = _grain()
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0 if in_memory else 2, prefetch_buffer_size=8))
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags (module docstring).
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


def _in_memory(source: Any) -> bool:
  from research.data.datasets import InMemorySource  # datasets imports tfds: only when needed
  return isinstance(source, InMemorySource)


class _EpochShuffled:
  """An infinite stream over `source`: epoch e is the permutation default_rng((seed, e)) of it.

  Random access (element i is in epoch i // len(source)), deterministic, and cheap: the
  permutation of an epoch is computed once (Grain's per-index shuffle costs ~0.1 ms an element).
  """

  def __init__(self, source: Any, seed: int):
    self.source, self.seed, self.n = source, seed, len(source)
    self._cached = (-1, None)  # (epoch, its permutation): one attribute, so reader threads agree

  def __len__(self) -> int:
    return sys.maxsize

  def _permutation(self, epoch: int) -> np.ndarray:
    cached_epoch, perm = self._cached
    if cached_epoch != epoch:
      perm = np.random.default_rng((self.seed, epoch)).permutation(self.n)
      self._cached = (epoch, perm)
    return perm

  def __getitem__(self, i: int) -> Example:
    epoch, j = divmod(int(i), self.n)
    return self.source[int(self._permutation(epoch)[j])]

  def source_indices(self, positions: np.ndarray) -> np.ndarray:
    """The source index of each stream position (int [b], ascending, spanning at most a few epochs)."""
    epochs, offsets = np.divmod(positions, self.n)
    if epochs[0] == epochs[-1]:  # one epoch (most batches)
      return self._permutation(int(epochs[0]))[offsets]
    out = np.empty_like(positions)
    for epoch in np.unique(epochs):
      where = epochs == epoch
      out[where] = self._permutation(int(epoch))[offsets[where]]
    return out


FIRST_BLOCK_WINDOW = 2048  # stream positions whose first Philox block `ExampleRngs` computes at once


class ExampleRngs:
  """The augmentation RNG of stream element i: numpy's Philox keyed by `seed`, counter
  [0, 0, 0, i] (the derivation Grain's `random_map` uses, so the draws are the same as with it).
  One generator per thread, whose state is reset from a template for each element: ~2 us, against
  ~18 us for a new generator."""

  def __init__(self, seed: int):
    self.seed = seed
    self._local = threading.local()
    self._window: tuple[int, tuple[np.ndarray, ...]] = (0, (np.zeros(0, np.uint64),) * 4)

  def __reduce__(self):
    return (ExampleRngs, (self.seed,))

  def __call__(self, i: int) -> np.random.Generator:
    local = self._local
    if not hasattr(local, "rng"):
      local.rng = np.random.Generator(np.random.Philox(self.seed))
      local.state = local.rng.bit_generator.state
      local.state.update(buffer=np.zeros(4, np.uint64), buffer_pos=4, has_uint32=0, uinteger=0)
      local.counter = local.state["state"]["counter"] = np.zeros(4, np.uint64)
    local.counter[3] = i
    local.rng.bit_generator.state = local.state
    return local.rng

  def first_block(self, positions: np.ndarray) -> tuple[np.ndarray, ...]:
    """The first 4 uint64 outputs of the RNG of each stream position (research.data.philox).

    Computed for a window of FIRST_BLOCK_WINDOW consecutive positions from the lowest one asked
    for, and looked up there while later calls stay inside it: numpy's cost is per operation at
    these sizes, so 2,048 positions cost 0.41 ms against 0.21 for 128 (one batch of the default
    job), and a training loop's next 15 batches are then a look-up."""
    positions = np.asarray(positions, np.int64)
    if not positions.size:
      return (np.zeros(0, np.uint64),) * 4
    if not hasattr(self, "_key"):
      self._key = philox.key_of(self.seed)
    start, words = self._window  # one attribute: reader threads see a whole window or the old one
    low, high = int(positions.min()), int(positions.max())
    if high - low >= FIRST_BLOCK_WINDOW:  # scattered positions: those alone
      return philox.first_block(self._key, positions)
    if low < start or high >= start + len(words[0]):
      start = low
      words = philox.first_block(self._key, np.arange(low, low + FIRST_BLOCK_WINDOW, dtype=np.int64))
      self._window = (start, words)
    return tuple(w[positions - start] for w in words)


class _TrainBatches:
  """Batch k of this process: rows [p * b, (p + 1) * b) of global batch k of the augmented stream.

  Global batch k holds stream elements [k * B, (k + 1) * B); process p loads rows
  [p * b, (p + 1) * b) of it (b = B / process_count). Every process count therefore sees the
  same global batches, row for row, with the same per-example augmentation (`ExampleRngs` of the
  element's stream position). One random-access element per batch, so Grain's bookkeeping is paid
  per batch, not per example (it cost ~60 us an example).
  """

  def __init__(self, stream: _EpochShuffled, preprocess: TrainPreprocess, seed: int,
               global_batch: int, local_batch: int, process: int,
               preprocess_batch: Optional[BatchPreprocess] = None):
    self.stream, self.preprocess, self.rngs = stream, preprocess, ExampleRngs(seed)
    self.preprocess_batch = preprocess_batch
    self.global_batch, self.local_batch, self.process = global_batch, local_batch, process

  def __len__(self) -> int:
    return len(self.stream) // self.global_batch

  def __getitem__(self, k: int) -> Example:
    first = k * self.global_batch + self.process * self.local_batch
    if self.preprocess_batch is not None:
      positions = np.arange(first, first + self.local_batch, dtype=np.int64)
      batch = self.preprocess_batch(self.stream.source, self.stream.source_indices(positions), positions, self.rngs)
      if batch is not None:
        return batch
    examples = [self.preprocess(self.stream[i], self.rngs(i)) for i in range(first, first + self.local_batch)]
    return {key: np.stack([np.asarray(e[key]) for e in examples]) for key in examples[0]}


def train_batches(source: Any, preprocess: TrainPreprocess, local_batch_size: int, seed: int,
                  start_batch: int = 0, num_workers: int = 0,
                  preprocess_batch: Optional[BatchPreprocess] = None) -> Iterator[Example]:
  """Infinite iterator of this process's training batches, starting at global batch `start_batch`.

  Args:
    source: a random-access data source (len and __getitem__), e.g. from `tfds.data_source`.
    preprocess: (example, rng) -> example of fixed-shape numpy arrays; the rng is derived from
      (seed, position in the stream), so augmentation does not depend on the process count.
    local_batch_size: rows per batch on this process (global batch / process count).
    seed: data-order and augmentation seed.
    start_batch: index of the first batch to yield (the train step to resume at).
    num_workers: Grain worker processes (0: preprocess in this process; -1: `resolve_num_workers`).
    preprocess_batch: optional vectorized form of `preprocess` (same batches, bit for bit), tried
      first for each batch (`BatchPreprocess`).
  Yields:
    dicts of numpy arrays with leading dimension `local_batch_size`.
  """
  if len(source) == 0:
    raise ValueError("the training split is empty")
  num_workers = resolve_num_workers(num_workers, source)
  batches = _TrainBatches(_EpochShuffled(source, seed), preprocess, seed + 1,
                          local_batch_size * jax.process_count(), local_batch_size, jax.process_index(),
                          preprocess_batch)
  if num_workers == 0 and _in_memory(source):
    # Read in this thread, as Grain without workers would (`_to_iter`), without its per-element
    # bookkeeping: 37 us of the default job's 110 us a batch.
    return (batches[k] for k in itertools.count(start_batch))
  return iter(_to_iter(_grain().MapDataset.source(batches)[start_batch:], num_workers, _in_memory(source)))


class _PaddedEvalSource:
  """Indices of one process's rows of each padded global batch -> (example index, mask)."""

  def __init__(self, source: Any, global_batch_size: int):
    self.source = source
    n = len(source)
    num_batches = -(-n // global_batch_size)
    local = global_batch_size // jax.process_count()
    rows = np.arange(num_batches * global_batch_size).reshape(num_batches, jax.process_count(), local)
    self.indices = rows[:, jax.process_index()].reshape(-1)
    self.n = n

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> tuple[Example, int]:
    index = int(self.indices[i])
    return self.source[index if index < self.n else 0], index


def eval_batches(source: Any, preprocess: EvalPreprocess, global_batch_size: int,
                 num_workers: int = 0) -> Iterator[Example]:
  """One pass over the split, this process's rows of each global batch, with a `mask` entry.

  Yields dicts of numpy arrays with leading dimension global_batch_size / process_count, plus
  `mask` (float32, 1 for real examples, 0 for padding) and `index` (int32, the example's position
  in the split; >= the split size for padding). num_workers as in `train_batches`.
  """
  if len(source) == 0:
    raise ValueError("the evaluation split is empty")
  num_workers = resolve_num_workers(num_workers, source)
  local = global_batch_size // jax.process_count()

  def with_mask(item: tuple[Example, int]) -> Example:
    example, index = item
    out = dict(preprocess(example))
    out["mask"] = np.float32(index < len(source))
    out["index"] = np.int32(index)
    return out

  ds = _grain().MapDataset.source(_PaddedEvalSource(source, global_batch_size)).map(with_mask)
  return iter(_to_iter(ds.batch(local, drop_remainder=True), num_workers, _in_memory(source)))


def first_example(source: Any, preprocess: EvalPreprocess, batch_size: int) -> Example:
  """A batch of `batch_size` copies of the first preprocessed example (for shape inference)."""
  ex = preprocess(source[0])
  return {k: np.stack([np.asarray(v)] * batch_size) for k, v in ex.items()}
