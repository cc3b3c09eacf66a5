"""Plain-text datasets for character-level language models (dataset name 'text').

A text file read as a dataset: config.dataset.name = 'text' and config.dataset.data_dir = the
file's path ('': DEFAULT_FILE, NumPy docstrings shipped with the project; where they come from
and their BSD license: numpy_docstrings_LICENSE.txt). Splits by character position: 'train' is
the first TRAIN_FRACTION of the text, 'test' the rest. Each split is ONE example {'text': str};
a task cuts it into sequences of character ids (`CharVocabulary`, `CharSequences`).
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
from typing import Dict, Iterable, List, Optional

import numpy as np

DEFAULT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "numpy_docstrings.txt")
TRAIN_FRACTION = 0.9


@dataclasses.dataclass(frozen=True)
class TextInfo:
  """path: the text file; splits: split name -> number of characters."""
  path: str
  splits: Dict[str, int]


class TextFile:
  """A UTF-8 text file as a dataset, with the part of a TFDS builder's interface that
  research.data.datasets uses: `info` and `as_data_source(split)`."""

  def __init__(self, path: Optional[str] = None):
    path = os.path.expanduser(path or DEFAULT_FILE)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"dataset 'text': config.dataset.data_dir must name a text file; "
                              f"{path!r} is not one")
    with open(path, encoding="utf-8") as f:
      text = f.read()
    cut = int(len(text) * TRAIN_FRACTION)
    self._splits = {"train": text[:cut], "test": text[cut:]}
    self.info = TextInfo(path, {k: len(v) for k, v in self._splits.items()})

  def as_data_source(self, split: str) -> List[Dict[str, str]]:
    """[{'text': the split's text}]."""
    if split not in self._splits:
      raise ValueError(f"dataset 'text' has no split {split!r}; it has: {', '.join(self._splits)}")
    return [{"text": self._splits[split]}]


def builder(data_dir: Optional[str] = None) -> TextFile:
  """The 'text' dataset of the file `data_dir` (default DEFAULT_FILE)."""
  return TextFile(data_dir)


def unigram_entropy_bits(text: str) -> float:
  """Entropy of the text's character frequencies, bits per character: what the best model that
  ignores context (the unigram distribution of this very text) achieves."""
  counts = np.asarray(list(collections.Counter(text).values()), np.float64)
  p = counts / counts.sum()
  return float(-(p * np.log2(p)).sum())


class CharVocabulary:
  """Characters <-> ids: 0 is <unk> (a character not in the text the vocabulary was built from),
  then that text's distinct characters in code-point order."""

  UNK = 0

  def __init__(self, chars: Iterable[str]):
    self.chars = [""] + sorted(set(chars))
    self._ids = {c: i for i, c in enumerate(self.chars) if c}

  def __len__(self) -> int:
    return len(self.chars)

  def encode(self, text: str) -> np.ndarray:
    """int32 [len(text)]."""
    return np.asarray([self._ids.get(c, self.UNK) for c in text], np.int32)

  def decode(self, ids: Iterable[int]) -> str:
    """<unk> decodes to U+FFFD."""
    return "".join(self.chars[int(i)] or "\ufffd" for i in ids)


class CharSequences:
  """Windows of `length` consecutive ids of an encoded text, one every `stride` characters:
  item i = {'ids': int32 [length]} = ids[i * stride : i * stride + length] (a random-access data
  source for the Grain pipelines)."""

  def __init__(self, ids: np.ndarray, length: int, stride: int):
    if len(ids) < length:
      raise ValueError(f"the text has {len(ids)} characters, fewer than one sequence ({length})")
    self.ids, self.length, self.stride = ids, length, stride

  def __len__(self) -> int:
    return (len(self.ids) - self.length) // self.stride + 1

  def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
    if not 0 <= index < len(self):
      raise IndexError(index)
    start = int(index) * self.stride
    return {"ids": self.ids[start:start + self.length]}
