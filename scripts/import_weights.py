"""A torchvision checkpoint -> a run folder that evaluate and init_from read:
    python scripts/import_weights.py --arch resnet50 --weights FILE.pth --out DIR

The command is research/weights/import_weights.py (its docstring says more).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from research.weights.import_weights import run  # noqa: E402

if __name__ == "__main__":
  run()
