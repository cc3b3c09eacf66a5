"""Dataset access by TFDS name: built-in offline datasets, prepared real datasets, clear errors.

A dataset is named as in the TFDS catalog ('mnist', 'cifar10', 'voc/2007', 'coco/2017'), is one
of the built-in offline datasets ('digits', 'shapes', 'shapes/128'), or is a real dataset whose
builder lives here and reads the user's files ('voc2012_segmentation'); it is read from `data_dir`
with `tfds.data_source` (random access, array_record, no TensorFlow); FILE_DATASETS are read from
a local file instead ('text': the text file named by data_dir). Built-in datasets are
generated into `data_dir` the first time they are asked for; a real dataset that is not prepared
raises `DatasetNotPreparedError` with the command that prepares it. Nothing is ever downloaded
implicitly.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
from typing import Any, Optional

import tensorflow_datasets as tfds

# Built-in offline datasets: TFDS name -> module defining (and so registering) its builder.
BUILTIN = {
    "digits": "research.data.builders.digits",
    "shapes": "research.data.builders.shapes",
}

# Real datasets not in the TFDS catalog, built by a builder of this repository from files the user
# has: TFDS name -> module defining (and so registering) its builder.
OFFLINE_BUILDERS = {
    "voc2012_segmentation": "research.data.builders.voc_segmentation",
}

# Datasets read from a local file (data_dir names it), not TFDS: name -> module whose
# `builder(data_dir)` has `info` and `as_data_source(split)`.
FILE_DATASETS = {
    "text": "research.data.text",
}



# A user's TFDS builders generated into data_dir on first use, like BUILTIN (register_dataset).
GENERATED: set = set()


def register_dataset(builder_cls: type) -> type:
  """Class decorator for a user's `tfds.core.GeneratorBasedBuilder` (defined in their own package,
  which their config imports): the dataset `builder_cls.name` is then generated into data_dir the
  first time a run asks for it, as the built-in datasets are. Its examples use the feature names
  the task reads (e.g. 'image' uint8 [H, W, C] and 'label' ClassLabel for classification)."""
  GENERATED.add(builder_cls.name)
  return builder_cls


class DatasetNotPreparedError(FileNotFoundError):
  """The dataset is not in data_dir; the message says how to prepare it."""


def default_data_dir(data_dir: Optional[str] = None) -> str:
  """`data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def _base_name(name: str) -> str:
  return name.split(":")[0].split("/")[0]


@contextlib.contextmanager
def _build_lock(data_dir: str, name: str):
  """An inter-process lock, so parallel test workers or hosts do not build one dataset twice."""
  os.makedirs(data_dir, exist_ok=True)
  path = os.path.join(data_dir, f".{_base_name(name)}.build.lock")
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def get_builder(name: str, data_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder for `name` in `data_dir`, generating built-in datasets on demand."""
  base = _base_name(name)
  if base in FILE_DATASETS:
    return importlib.import_module(FILE_DATASETS[base]).builder(data_dir or None)
  data_dir = default_data_dir(data_dir)
  if base in BUILTIN or base in GENERATED:
    if base in BUILTIN:
      importlib.import_module(BUILTIN[base])
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
      with _build_lock(data_dir, name):
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
          builder.download_and_prepare()
    return builder
  if base in OFFLINE_BUILDERS:
    importlib.import_module(OFFLINE_BUILDERS[base])
  try:
    if ":" in name:  # a version given: TFDS reads the prepared files, no builder code needed
      builder = tfds.builder(name, data_dir=data_dir)
    else:  # (constructs coco's builder, whose code names TensorFlow's dtypes, without TensorFlow)
      from research.data.prepare.common import catalog_builder
      builder = catalog_builder(name, data_dir, file_format=None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetNotPreparedError(
        f"dataset {name!r} is neither built in ({', '.join(sorted(BUILTIN))}) nor in the TFDS "
        f"catalog: {str(e).splitlines()[0]}") from None
  if not builder.is_prepared():
    raise DatasetNotPreparedError(_not_prepared_message(name, data_dir, str(builder.data_dir)))
  return builder


def _not_prepared_message(name: str, data_dir: str, looked_for: str) -> str:
  """How to prepare `name`: offline from the publisher's files, else with `tfds build`."""
  from research.data import prepare  # (its modules load only when asked for)
  catalog = name.split(":")[0]
  message = f"dataset {name!r} is not prepared in data_dir {data_dir} (looked for {looked_for})."
  offline = catalog if catalog in prepare.MODULES else _base_name(name)
  if offline in prepare.MODULES:
    message += (f" Prepare it offline, from {prepare.files_needed(offline)} in a folder DIR:\n"
                f"  research-prepare-data {offline} --source DIR --data_dir {data_dir}")
    if offline in OFFLINE_BUILDERS:
      return message
    message += "\nor, "
  else:
    message += " Prepare it "
  return message + (f"with TFDS (needs `pip install tensorflow-cpu` and network):\n"
                    f"  tfds build {name} --data_dir {data_dir} --file_format=array_record")


class InMemorySource:
  """Every example of a source, decoded once and kept in memory (for small datasets, where
  decoding images on every read would bound the input pipeline)."""

  def __init__(self, source: Any):
    self._examples = [source[i] for i in range(len(source))]

  def __len__(self) -> int:
    return len(self._examples)

  def __getitem__(self, index: int) -> Any:
    return self._examples[index]


def _nbytes(example: Any) -> int:
  if isinstance(example, dict):
    return sum(_nbytes(v) for v in example.values())
  if isinstance(example, (list, tuple)):
    return sum(_nbytes(v) for v in example)
  return int(getattr(example, "nbytes", 64))


def get_data_source(name: str, split: str, data_dir: Optional[str] = None,
                    cache_bytes: int = 0) -> Any:
  """A random-access source of decoded examples (dicts of numpy arrays) for one split.

  cache_bytes: if the decoded split is estimated (from its first example) to fit in this many
    bytes, it is decoded once and held in memory. 0 disables caching.
  """
  builder = get_builder(name, data_dir)
  if _base_name(name) in FILE_DATASETS:
    return maybe_cache(builder.as_data_source(split), cache_bytes)
  splits = builder.info.splits
  if any(part.split("[")[0] not in splits for part in split.split("+")):
    raise ValueError(f"dataset {name!r} has no split {split!r}; it has: {', '.join(splits.keys())}")
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise DatasetNotPreparedError(
        f"dataset {name!r} in {builder.data_dir} is stored as {builder.info.file_format.value}, "
        f"which needs TensorFlow to read; rebuild it with --file_format=array_record")
  return maybe_cache(builder.as_data_source(split=split), cache_bytes)


def maybe_cache(source: Any, cache_bytes: int) -> Any:
  """`InMemorySource(source)` if its examples (estimated from the first) fit in `cache_bytes`."""
  if cache_bytes and len(source) and len(source) * _nbytes(source[0]) <= cache_bytes:
    return InMemorySource(source)
  return source


def num_classes(name: str, data_dir: Optional[str] = None, feature: str = "label") -> int:
  """The number of classes of the ClassLabel feature `feature`."""
  return get_builder(name, data_dir).info.features[feature].num_classes
