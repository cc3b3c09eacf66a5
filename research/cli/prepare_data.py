"""`research-prepare-data NAME --source PATH [--data_dir DIR] [--num_workers N] [--max_examples K]`:
a dataset prepared offline into a TFDS data_dir (research/data/prepare/cli.py; `--help` lists the
files each dataset needs)."""
from __future__ import annotations

import sys

from research.data.prepare.cli import run as _run


def run() -> None:
  """Console entry point."""
  sys.exit(_run(sys.argv[1:]))


if __name__ == "__main__":
  run()
