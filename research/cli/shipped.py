"""The configs and experiments shipped inside the package, found by name or by path.

`research-train --config lenet5_digits` and `--config configs/lenet5_digits.py` name the same file:
a value that is an existing path is used as it is; otherwise a shipped config of that name
(`research/configs/<name>.py`, installed from the repository's top-level `configs/`).
"""
from __future__ import annotations

import difflib
import importlib.resources
import os
from typing import List, Optional, Sequence

from research.core.config import ConfigError


def shipped_dir(kind: str) -> str:
  """The folder of the shipped `configs` or `experiments`."""
  return str(importlib.resources.files("research") / kind)


def shipped_names(kind: str) -> List[str]:
  """Names (file stems) of the shipped `configs` or `experiments`."""
  folder = shipped_dir(kind)
  if not os.path.isdir(folder):
    return []
  return sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_"))


def resolve(value: str, kind: str = "configs", relative_to: Sequence[str] = ()) -> str:
  """The path of a config or experiment file named by `value`.

  Tried in order: an absolute path; `value` relative to each folder of `relative_to`; relative to
  the current folder; a shipped file of that name (with or without '.py'). A ':ARG' suffix
  (`get_config(ARG)`, as ml_collections' config flags read it) is kept.
  """
  path, sep, arg = value.partition(":")
  found = _find(path, kind, relative_to)
  if found is None:
    names = shipped_names(kind)
    close = difflib.get_close_matches(os.path.basename(path).removesuffix(".py"), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"no {kind[:-1]} file {path!r}: not a path, nor a shipped {kind[:-1]}{hint}; "
                      f"shipped: {', '.join(names)}")
  return found + sep + arg


def _find(path: str, kind: str, relative_to: Sequence[str]) -> Optional[str]:
  candidates = [path] if os.path.isabs(path) else [os.path.join(d, path) for d in relative_to] + [path]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  if os.path.isabs(path) or os.sep in path.strip(os.sep):
    return None
  shipped = os.path.join(shipped_dir(kind), path if path.endswith(".py") else path + ".py")
  return shipped if os.path.isfile(shipped) else None


def resolve_config_flag(argv: List[str]) -> List[str]:
  """argv with the value of `--config` (either `--config=V` or `--config V`) resolved to a path."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      out[i] = "--config=" + resolve(arg.split("=", 1)[1])
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = resolve(out[i + 1])
  return out
