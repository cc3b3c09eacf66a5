"""Datasets: the built-in digits split, offline MNIST preparation, deterministic train order."""
import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from research.data import datasets, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_digits_splits_and_features(data_dir):
  train = datasets.get_data_source("digits", "train", data_dir)
  test = datasets.get_data_source("digits", "test", data_dir)
  assert (len(train), len(test)) == (1437, 360)
  ex = train[0]
  assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8
  labels = np.array([test[i]["label"] for i in range(len(test))])
  assert set(labels.tolist()) == set(range(10))
  assert datasets.num_classes("digits", data_dir) == 10


def _write_idx(path, array):
  header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_prepare_mnist_offline_from_idx_files(tmp_path):
  rng = np.random.default_rng(0)
  idx = tmp_path / "idx"
  idx.mkdir()
  sizes = {"train": 20, "t10k": 7}
  arrays = {}
  for prefix, n in sizes.items():
    images = rng.integers(0, 256, (n, 28, 28))
    labels = rng.integers(0, 10, n)
    _write_idx(str(idx / f"{prefix}-images-idx3-ubyte.gz"), images)
    _write_idx(str(idx / f"{prefix}-labels-idx1-ubyte.gz"), labels)
    arrays[prefix] = (images, labels)
  data_dir = str(tmp_path / "tfds")
  out = subprocess.run([sys.executable, "-m", "research.cli.prepare_data", "mnist",
                        "--idx_dir", str(idx), "--data_dir", data_dir], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  train = datasets.get_data_source("mnist", "train", data_dir)
  test = datasets.get_data_source("mnist", "test", data_dir)
  assert (len(train), len(test)) == (20, 7)
  by_label = sorted((int(test[i]["label"]), test[i]["image"][..., 0].tobytes()) for i in range(7))
  expected = sorted((int(l), im.astype(np.uint8).tobytes()) for im, l in zip(*arrays["t10k"]))
  assert by_label == expected


def test_train_order_is_deterministic_and_resumable():
  source = [{"x": np.int32(i)} for i in range(50)]
  prep = lambda e, rng: {"x": e["x"], "r": np.float32(rng.random())}  # noqa: E731
  it = pipeline.train_batches(source, prep, 8, seed=3)
  full = [next(it) for _ in range(15)]  # crosses two epoch boundaries
  resumed = pipeline.train_batches(source, prep, 8, seed=3, start_batch=9)
  for k in range(9, 15):
    b = next(resumed)
    np.testing.assert_array_equal(b["x"], full[k]["x"])
    np.testing.assert_array_equal(b["r"], full[k]["r"])
  epoch1 = np.concatenate([b["x"] for b in full[:7]])[:50]
  assert sorted(epoch1.tolist()) == list(range(50))  # each epoch is a permutation
  epoch2 = np.concatenate([b["x"] for b in full])[50:100]
  assert sorted(epoch2.tolist()) == list(range(50)) and not np.array_equal(epoch1, epoch2)


def test_train_batches_equal_grains_per_example_random_map():
  """Batches are built one whole batch at a time, with the per-example draws Grain's random_map
  makes (Philox keyed by the seed, counter = the example's stream position), so the data of a run
  did not change when Grain's per-example path was replaced."""
  import grain
  source = [{"x": np.int32(i)} for i in range(37)]
  prep = lambda e, rng: {"x": e["x"], "r": np.float32(rng.random()), "k": rng.integers(0, 5, size=2)}  # noqa: E731
  ours = pipeline.train_batches(source, prep, 8, seed=5, start_batch=2)
  stream = grain.MapDataset.source(pipeline._EpochShuffled(source, 5)).random_map(prep, seed=6)
  for k in range(2, 12):  # crosses epoch boundaries
    batch = next(ours)
    for j in range(8):
      expected = stream[k * 8 + j]
      for key in expected:
        np.testing.assert_array_equal(batch[key][j], expected[key])


def test_worker_processes_give_the_same_batches(data_dir):
  from research.tasks.classification import ClassificationTask
  from tests.core_helpers import small_config
  task = ClassificationTask(small_config(data_dir), datasets.get_builder("digits", data_dir).info)
  source = datasets.get_data_source("digits", "train", data_dir, cache_bytes=1 << 30)
  inline = pipeline.train_batches(source, task.preprocess_train, 32, seed=0, start_batch=3)
  workers = pipeline.train_batches(source, task.preprocess_train, 32, seed=0, start_batch=3, num_workers=2)
  for _ in range(4):
    a, b = next(inline), next(workers)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_auto_num_workers_only_for_sources_not_in_memory():
  from research.data.datasets import InMemorySource
  on_disk = list(range(10))
  assert pipeline.resolve_num_workers(3, on_disk) == 3
  assert pipeline.resolve_num_workers(-1, InMemorySource(on_disk)) == 0
  assert pipeline.resolve_num_workers(-1, on_disk) == len(os.sched_getaffinity(0))


def test_philox_first_block_and_draws_equal_numpys_generators():
  from research.data import philox
  positions = np.array([0, 1, 2, 7, 1000, 2**40 + 3])
  for seed in (0, 6):
    rngs = pipeline.ExampleRngs(seed)
    words = rngs.first_block(positions)
    for j, position in enumerate(positions):
      np.testing.assert_array_equal([w[j] for w in words], rngs(int(position)).bit_generator.random_raw(4))
      rng = rngs(int(position))
      draws = (rng.integers(0, 5), rng.integers(0, 9), rng.random())
      assert philox.bounded(philox.low_half(words[0][j:j + 1]), 5)[0][0] == draws[0]
      assert philox.bounded(philox.high_half(words[0][j:j + 1]), 9)[0][0] == draws[1]
      assert philox.uniform(words[1][j:j + 1])[0] == draws[2]
  value, rejected = philox.bounded(np.array([0, 1], np.uint64), 5)  # 0 * 5 mod 2**32 < (2**32 - 5) % 5
  assert rejected.tolist() == [True, False]


def test_example_rngs_window_gives_the_direct_first_blocks():
  """ExampleRngs.first_block's window of precomputed positions: batches inside it, across its end,
  before its start and scattered ones equal philox.first_block of those positions alone."""
  from research.data import philox
  rngs, key = pipeline.ExampleRngs(4), philox.key_of(4)
  w = pipeline.FIRST_BLOCK_WINDOW
  for positions in (np.arange(0, 128), np.arange(128, 256), np.arange(w - 64, w + 64), np.arange(5, 9),
                    np.array([w + 3, w + 1]), np.array([0, 3 * w]), np.zeros(0, np.int64)):
    got, want = rngs.first_block(positions), philox.first_block(key, positions)
    for g, x in zip(got, want):
      np.testing.assert_array_equal(g, x)


@pytest.mark.parametrize("augment", [("crop",), ("crop", "flip"), ("flip",)])
def test_vectorized_classification_batches_equal_per_example_ones(data_dir, augment, monkeypatch):
  """ClassificationTask.preprocess_train_batch (in-memory sources) gives the arrays of
  preprocess_train example by example, bit for bit, on every process's rows and across epochs;
  a batch with a rejected draw falls back to the per-example path."""
  from research.data import philox
  from research.tasks.classification import ClassificationTask
  from tests.core_helpers import small_config
  config = small_config(data_dir)
  config.task.augment = augment
  task = ClassificationTask(config, datasets.get_builder("digits", data_dir).info)
  source = datasets.get_data_source("digits", "train", data_dir, cache_bytes=1 << 30)
  stream = pipeline._EpochShuffled(source, 3)
  for process in (0, 1):  # two processes' rows of a global batch of 200 (1,437 examples: 8 epochs)
    per_example = pipeline._TrainBatches(stream, task.preprocess_train, 4, 200, 100, process)
    batched = pipeline._TrainBatches(stream, task.preprocess_train, 4, 200, 100, process,
                                     task.preprocess_train_batch)
    for k in (0, 6, 7, 50):
      a, b = per_example[k], batched[k]
      assert sorted(a) == sorted(b)
      for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        np.testing.assert_array_equal(a[key], b[key])
  calls = []
  monkeypatch.setattr(task, "preprocess_train", lambda e, rng: calls.append(1) or ClassificationTask.preprocess_train(task, e, rng))
  monkeypatch.setattr(philox, "bounded", lambda half, n: (np.zeros(len(half), np.int64), np.ones(len(half), bool)))
  fallback = pipeline._TrainBatches(stream, task.preprocess_train, 4, 200, 100, 0, task.preprocess_train_batch)[6]
  plain = ClassificationTask(config, datasets.get_builder("digits", data_dir).info)
  expected = pipeline._TrainBatches(stream, plain.preprocess_train, 4, 200, 100, 0)[6]
  for key in expected:
    np.testing.assert_array_equal(fallback[key], expected[key])
  assert ("crop" in augment) == bool(calls)
