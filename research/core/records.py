"""Dataset records that name their file and index when they cannot be read."""
from __future__ import annotations

import bisect
from typing import Any

from research.core.errors import DataRecordError


def record_file(source: Any, index: int) -> str:
  """The file holding record `index` of a TFDS array_record source ('an unknown file' otherwise)."""
  inner = getattr(source, "data_source", None)
  sums = getattr(inner, "_prefix_sums", None)
  instructions = getattr(inner, "_read_instructions", None)
  if not sums or not instructions:
    return "an unknown file"
  shard = bisect.bisect_right(list(sums), index)
  if shard >= len(instructions):
    return "an unknown file"
  instruction = instructions[shard]
  offset = index - (sums[shard - 1] if shard else 0)
  filename = getattr(instruction, "filename", None) or str(instruction)
  return f"{filename} (record {int(getattr(instruction, 'start', 0)) + offset} of that file)"


class NamedRecords:
  """A random-access source whose unreadable records raise DataRecordError naming the dataset,
  split, index and file."""

  def __init__(self, source: Any, dataset: str, split: str):
    self.source, self.dataset, self.split = source, dataset, split

  def __len__(self) -> int:
    return len(self.source)

  def replace_source(self, source: Any) -> "NamedRecords":
    """The same naming around another form of the source (e.g. one that skips decoding)."""
    return NamedRecords(source, self.dataset, self.split)

  def __getitem__(self, index: int) -> Any:
    try:
      return self.source[index]
    except IndexError:
      raise
    except Exception as e:  # noqa: BLE001  (re-raised with the record's location, chained)
      raise DataRecordError(
          f"dataset {self.dataset!r} split {self.split!r}: record {index} cannot be read from "
          f"{record_file(self.source, index)}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
          "The file is damaged: prepare the dataset again (delete its folder in data_dir)") from e
