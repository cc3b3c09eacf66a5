"""Prepare a dataset offline into a TFDS data_dir; see research/data/prepare/cli.py and `--help`.

  python scripts/prepare_data.py NAME --source PATH [--data_dir DIR] [--num_workers N] [--max_examples K]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from research.data.prepare.cli import run  # noqa: E402

if __name__ == "__main__":
  sys.exit(run(sys.argv[1:]))
