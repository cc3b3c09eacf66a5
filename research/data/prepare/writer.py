"""Writes a prepared dataset: array_record shards in parallel, then TFDS's metadata, atomically.

A dataset module hands `write` a `Plan`: the TFDS builder for the dataset's catalog name (its
`info.features` is the feature spec of TFDS's own builder, label names filled in), a module-level
`generate(args)` that yields the examples of one shard as TFDS feature dicts, and the `Job`s,
one per shard. Each job runs in one of `num_workers` spawned processes (in this process when 1)
and writes its examples, serialized by the builder's features exactly as `tfds build` does,
into one array_record file (`group_size:1`, as TFDS writes it: random access; uncompressed,
unlike TFDS's default zstd, which costs ~0.7 ms per JPEG record and saves under 1% on JPEGs and
PNGs; readers handle both).

Layout and crash safety: everything is written under `<data_dir>/<name>/<config>/.<version>.incomplete`
and renamed to `<version>` only once `dataset_info.json` and `features.json` are written, so a
killed preparation never leaves a folder that `tfds.builder(...).is_prepared()` accepts. A rerun
with the same plan (same source files, --max_examples) resumes: shards finished before the kill
(each renamed into place only when complete, with its example count beside it) are kept, the
others are written again. A different plan restarts from scratch.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from typing import Any, Callable, Iterator, Optional

import tensorflow_datasets as tfds
from array_record.python import array_record_module


@dataclasses.dataclass(frozen=True)
class Job:
  """One output shard: `generate(args)` yields its examples, read from `size` source bytes."""

  split: str
  args: Any
  size: int


@dataclasses.dataclass
class Plan:
  """What to write. `generate` must be a module-level function (it is pickled by name)."""

  builder: tfds.core.DatasetBuilder
  generate: Callable[[Any], Iterator[dict]]
  jobs: list[Job]
  # Expected output bytes per source byte (JPEGs stored as they are: about 1; pixels re-encoded
  # as PNG from raw arrays: less), for the free-disk check.
  output_ratio: float = 1.05


class NotEnoughDiskError(OSError):
  """data_dir has less free space than the dataset needs."""


_PROGRESS = None  # a multiprocessing.Value in workers: examples written so far, all workers


def _init_worker(counter) -> None:
  global _PROGRESS
  _PROGRESS = counter


def _count(n: int) -> None:
  if _PROGRESS is not None:
    with _PROGRESS.get_lock():
      _PROGRESS.value += n


def write_shard(features: tfds.features.FeaturesDict, generate: Callable, args: Any,
                limit: Optional[int], path: str) -> dict:
  """Writes the first `limit` examples of `generate(args)` to the array_record file `path`
  (through `path`.tmp, renamed when complete); returns {'num_examples', 'num_bytes'}."""
  writer = array_record_module.ArrayRecordWriter(path + ".tmp", "group_size:1,uncompressed")
  count = num_bytes = pending = 0
  try:
    for example in itertools.islice(generate(args), limit):
      record = features.serialize_example(example)
      writer.write(record)
      count += 1
      pending += 1
      num_bytes += len(record)
      if pending == 64:
        _count(pending)
        pending = 0
  finally:
    writer.close()
  _count(pending)
  os.replace(path + ".tmp", path)
  stats = {"num_examples": count, "num_bytes": num_bytes}
  with open(path + ".json", "w") as f:
    json.dump(stats, f)
  return stats


def _limits(jobs: list[Job], max_examples: Optional[int]) -> list[Optional[int]]:
  """Per-job example limits spreading `max_examples` per split evenly over its jobs (so a subset
  of ImageNet has every class, not the first ones)."""
  if max_examples is None:
    return [None] * len(jobs)
  limits = []
  for split, group in itertools.groupby(jobs, key=lambda j: j.split):
    n = len(list(group))
    limits += [max_examples // n + (i < max_examples % n) for i in range(n)]
  return limits


def _fingerprint(plan: Plan, limits: list) -> str:
  text = repr([(j.split, j.args, j.size, lim) for j, lim in zip(plan.jobs, limits)])
  return hashlib.sha256(text.encode()).hexdigest()


def _human(num_bytes: float) -> str:
  for unit in ("B", "KB", "MB", "GB", "TB"):
    if num_bytes < 1000 or unit == "TB":
      return f"{num_bytes:.1f} {unit}"
    num_bytes /= 1000
  return ""


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class _Progress:
  """One status line on stderr: shards, examples, examples/s, ETA (from source bytes done)."""

  def __init__(self, name: str, jobs: list[Job], done: set[int]):
    self.name, self.jobs, self.done = name, jobs, set(done)
    self.total_size = sum(j.size for j in jobs) or 1
    self.start = time.time()
    self.start_size = sum(jobs[i].size for i in done)
    self.last = 0.0
    self.tty = sys.stderr.isatty()

  def show(self, examples: int, force: bool = False) -> None:
    now = time.time()
    if not force and now - self.last < (1 if self.tty else 15):
      return
    self.last = now
    elapsed = now - self.start
    size = sum(self.jobs[i].size for i in self.done)
    rate = examples / elapsed if elapsed > 0 else 0.0
    eta = "?"
    if size > self.start_size:
      eta = _duration(elapsed * (self.total_size - size) / (size - self.start_size))
    line = (f"{self.name}: {len(self.done)}/{len(self.jobs)} shards, {examples:,} examples, "
            f"{rate:,.0f} examples/s, ETA {eta}")
    print(("\r" + line + " " * 8) if self.tty else line, end="" if self.tty else "\n",
          file=sys.stderr, flush=True)


def _check_disk(data_dir: str, needed: float) -> None:
  free = shutil.disk_usage(data_dir).free
  if free < needed:
    raise NotEnoughDiskError(
        f"not enough free disk in {data_dir}: the dataset needs about {_human(needed)}, "
        f"{_human(free)} is free (free some space or pass another --data_dir)")


def write(plan: Plan, num_workers: int = 1, max_examples: Optional[int] = None) -> tfds.core.DatasetBuilder:
  """Writes `plan` into its builder's data_dir (see the module docstring); returns the builder.

  A dataset already prepared there is left as it is.
  """
  builder = plan.builder
  final = os.fspath(builder.data_dir)
  if os.path.isfile(os.path.join(final, "dataset_info.json")):
    print(f"{builder.name} is already prepared in {final}", file=sys.stderr)
    return builder
  temp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.incomplete")
  limits = _limits(plan.jobs, max_examples)
  fingerprint = _fingerprint(plan, limits)
  plan_file = os.path.join(temp, "plan.sha256")
  if os.path.isdir(temp) and _read(plan_file) != fingerprint:
    shutil.rmtree(temp)
  os.makedirs(temp, exist_ok=True)
  with open(plan_file, "w") as f:
    f.write(fingerprint)

  paths = [os.path.join(temp, f"job-{i:06d}.array_record") for i in range(len(plan.jobs))]
  stats: dict[int, dict] = {}
  for i, path in enumerate(paths):
    if os.path.isfile(path) and os.path.isfile(path + ".json"):
      with open(path + ".json") as f:
        stats[i] = json.load(f)
  if stats:
    print(f"resuming: {len(stats)} of {len(paths)} shards were finished before", file=sys.stderr)
  todo = [i for i in range(len(plan.jobs)) if i not in stats]
  if max_examples is None:  # (a subset's size is not known before it is read)
    _check_disk(os.path.dirname(final), sum(plan.jobs[i].size for i in todo) * plan.output_ratio)

  features = builder.info.features
  progress = _Progress(builder.name, plan.jobs, set(stats))
  if num_workers <= 1:
    counter = multiprocessing.Value("q", 0)
    _init_worker(counter)
    try:
      for i in todo:
        stats[i] = write_shard(features, plan.generate, plan.jobs[i].args, limits[i], paths[i])
        progress.done.add(i)
        progress.show(counter.value)
    finally:
      _init_worker(None)
    progress.show(counter.value, force=True)
  else:
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    with concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=context, initializer=_init_worker, initargs=(counter,)) as pool:
      futures = {pool.submit(write_shard, features, plan.generate, plan.jobs[i].args, limits[i],
                             paths[i]): i for i in todo}
      pending = set(futures)
      try:
        while pending:
          finished, pending = concurrent.futures.wait(
              pending, timeout=1, return_when=concurrent.futures.FIRST_EXCEPTION)
          for future in finished:
            stats[futures[future]] = future.result()
            progress.done.add(futures[future])
          progress.show(counter.value)
      except BaseException:
        for future in pending:
          future.cancel()
        raise
    progress.show(counter.value, force=True)
  if progress.tty:
    print(file=sys.stderr)
  _finish(plan, temp, final, paths, stats)
  return builder


def _read(path: str) -> Optional[str]:
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return f.read()


def _finish(plan: Plan, temp: str, final: str, paths: list[str], stats: dict[int, dict]) -> None:
  """Names the shards as TFDS does, writes dataset_info.json / features.json, renames temp -> final."""
  builder = plan.builder
  split_infos = []
  splits = list(dict.fromkeys(j.split for j in plan.jobs))
  for split in splits:
    indices = [i for i, j in enumerate(plan.jobs) if j.split == split and stats[i]["num_examples"]]
    if not indices:
      raise ValueError(f"{builder.name}: split {split!r} has no examples (empty source?)")
    template = tfds.core.naming.ShardedFileTemplate(
        data_dir=temp, dataset_name=builder.name, split=split, filetype_suffix="array_record")
    for shard, i in enumerate(indices):
      os.replace(paths[i], os.fspath(template.sharded_filepath(shard_index=shard, num_shards=len(indices))))
    split_infos.append(tfds.core.SplitInfo(
        name=split, shard_lengths=[stats[i]["num_examples"] for i in indices],
        num_bytes=sum(stats[i]["num_bytes"] for i in indices), filename_template=template))
  builder.info.set_splits(tfds.core.SplitDict(split_infos))
  for path in paths:
    for leftover in (path, path + ".json", path + ".tmp"):
      if os.path.exists(leftover):
        os.remove(leftover)
  os.remove(os.path.join(temp, "plan.sha256"))
  builder.info.write_to_directory(temp)
  os.replace(temp, final)
  print(f"prepared {builder.name} in {final}: " + ", ".join(
      f"{s.name} {s.num_examples:,}" for s in split_infos), file=sys.stderr)


def shards(items: list, num: int) -> list[list]:
  """`items` cut into `num` contiguous, nearly equal parts (no empty part)."""
  num = max(1, min(num, len(items)))
  size = math.ceil(len(items) / num)
  return [items[i:i + size] for i in range(0, len(items), size)]
