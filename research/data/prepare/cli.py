"""`prepare_data NAME --source PATH [--data_dir DIR] [--num_workers N] [--max_examples K]`.

Writes the TFDS dataset NAME (array_record) into DIR (default $TFDS_DATA_DIR, else
~/tensorflow_datasets) from the publisher's files in PATH, without TensorFlow or network; also
generates the built-in datasets (digits, shapes) now instead of on first use.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from research.data import datasets
from research.data.prepare import MODULES, files_needed, module, sources, writer


def parser() -> argparse.ArgumentParser:
  names = ", ".join(list(MODULES) + sorted(datasets.BUILTIN))
  p = argparse.ArgumentParser(
      prog="research-prepare-data", description=__doc__.split("\n\n")[1].replace("\n", " "),
      epilog="Files each dataset needs in --source:\n" + "\n".join(
          f"  {n:22s}{files_needed(n)}" for n in MODULES),
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("name", help=f"the dataset: {names}")
  p.add_argument("--source", "--idx_dir", "--voc_dir", dest="source",
                 help="folder with the publisher's files, as downloaded archives or extracted "
                      "(--idx_dir and --voc_dir are older names of it)")
  p.add_argument("--data_dir", help="TFDS data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  p.add_argument("--num_workers", type=int, default=max(1, min(16, os.cpu_count() or 1)),
                 help="processes writing shards in parallel (default: the CPU count, at most 16)")
  p.add_argument("--max_examples", type=int, default=None,
                 help="prepare at most K examples per split (spread over the shards), for quick trials")
  p.add_argument("--skip_checksums", action="store_true",
                 help="accept archives whose size or md5 differ from the publisher's (re-packed copies)")
  return p


def prepare(name: str, source: Optional[str], data_dir: Optional[str] = None, num_workers: int = 1,
            max_examples: Optional[int] = None, check: bool = True):
  """Prepares `name` into data_dir; returns its TFDS builder. SourceError for a bad source."""
  data_dir = datasets.default_data_dir(data_dir)
  if datasets._base_name(name) in datasets.BUILTIN:
    return datasets.get_builder(name, data_dir)
  if name not in MODULES:
    raise ValueError(f"don't know how to prepare {name!r}; known: {', '.join(list(MODULES) + sorted(datasets.BUILTIN))}")
  if not source:
    raise ValueError(f"{name} needs --source, the folder with {files_needed(name)}")
  if not os.path.isdir(source):
    raise sources.SourceError(f"--source {source} is not a folder (it should hold {files_needed(name)})")
  os.makedirs(data_dir, exist_ok=True)
  plan = module(name).plan(name, os.path.abspath(source), data_dir, check)
  return writer.write(plan, num_workers=num_workers, max_examples=max_examples)


def run(argv: Sequence[str]) -> int:
  """The command line (argv without the program name); returns the exit status."""
  p = parser()
  args = p.parse_args(list(argv))
  if args.name not in MODULES and datasets._base_name(args.name) not in datasets.BUILTIN:
    p.error(f"don't know how to prepare {args.name!r} offline; known: "
            f"{', '.join(list(MODULES) + sorted(datasets.BUILTIN))}. Another TFDS dataset: tfds build "
            f"{args.name} --file_format=array_record (needs `pip install tensorflow-cpu` and network)")
  if args.name in MODULES and not args.source:
    p.error(f"{args.name} needs --source, the folder with {files_needed(args.name)}")
  try:
    builder = prepare(args.name, args.source, args.data_dir, args.num_workers, args.max_examples,
                      not args.skip_checksums)
  except (sources.SourceError, writer.NotEnoughDiskError) as e:
    print(f"prepare_data {args.name}: error: {e}", file=sys.stderr)
    return 2
  print(f"{args.name} ready in {builder.data_dir}: "
        + ", ".join(f"{k} {v.num_examples:,}" for k, v in builder.info.splits.items()))
  return 0


if __name__ == "__main__":
  sys.exit(run(sys.argv[1:]))
