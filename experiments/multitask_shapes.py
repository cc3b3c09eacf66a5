"""Joint multi-task model vs single-task models on `shapes`, at equal training budget.

Question: does one small backbone shared by four heads (configs/multitask_shapes.py) reach, for
every task, at least 90% of the metric the task's own model reaches with the same budget?

Runs (RUNS below), all with COMMON: 1000 steps of 32 images (16 epochs of the 2,000 training
scenes), Adam 2e-3 with 50 warm-up steps and cosine decay, gradient norm clipped at 10, seed 0,
evaluated on the 300 test scenes at steps 500 and 1000; the same backbone ('small_cnn', widths 16-128,
0.59M parameters), the same normalization and horizontal flips:
  classification  the multi-task model with the classification head only (no registered
                  classifier has this backbone): small_cnn + global pool + dense
  detection       faster_rcnn (configs/faster_rcnn_shapes.py: 64-channel FPN on c2..c4)
  segmentation    fcn8s (configs/fcn8s_shapes.py)
  captioning      show_tell (configs/show_tell_shapes.py: 128-d embeddings, 256 LSTM units)
  joint           configs/multitask_shapes.py: the four heads above on one backbone, losses
                  summed with weight 1
Each single-task model is the joint model's backbone + one head, parameter for parameter (the
joint model loads their checkpoints with research.models.multitask.RENAME_INTO_JOINT); the only
difference in computation is that the joint detection head normalizes its losses per image, not
over the batch. The joint run therefore trains each head for the same number of steps and
examples as its single-task run, with one backbone instead of four.

Run and report (about 46 minutes on two shared CPU cores, the joint and detection runs most of it):
  python experiments/multitask_shapes.py run      # research-train into runs/multitask_compare/<name>
  python experiments/multitask_shapes.py report   # the table below, from their results.json

Measured here (2 shared CPU cores, jax 0.10.2; wall time includes compilation and evaluation):
| task           | metric   | single | joint  | joint / single | steps | single wall (s) |
|----------------|----------|--------|--------|----------------|-------|-----------------|
| classification | accuracy | 0.9033 | 0.9033 | 1.00           | 1000  | 189             |
| detection      | mAP      | 0.8236 | 0.7921 | 0.96           | 1000  | 871             |
| detection      | AP50     | 0.9726 | 0.9713 | 1.00           | 1000  | 871             |
| segmentation   | miou     | 0.8341 | 0.7792 | 0.93           | 1000  | 169             |
| captioning     | bleu_4   | 0.2862 | 0.3385 | 1.18           | 1000  | 295             |
| captioning     | cider    | 0.5583 | 0.8977 | 1.61           | 1000  | 295             |
| joint, all four heads |   |        |        |                | 1000  | 1248            |
The joint model reaches at least 90% of every single-task metric (the goal): detection mAP 96%,
segmentation mIoU 93%, classification equal, captioning above its single-task run (plausibly: the
captions name colours, shapes and positions, which the mask and box losses teach the backbone). One
seed per run: differences of a few points are within run-to-run noise at this budget. The
joint run took 1,248 s, the four single-task runs 1,524 s together (the detection head dominates
both); the cores were shared with other jobs, so wall times are indicative only. Step 500
(mid-run): classification 0.82 single / 0.86 joint, mAP 0.77 / 0.73, mIoU 0.77 / 0.74,
BLEU-4 0.27 / 0.25.

`get_experiment()` is the joint run, for research-sweep and research-report.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Tuple

from research.sweeps import Experiment

WORKDIRS = os.path.join("runs", "multitask_compare")  # Under the current folder.

COMMON = {
    "batch_size": 32, "eval_batch_size": 100, "num_train_steps": 1000, "eval_every_steps": 500,
    "checkpoint_every_steps": 500, "log_every_steps": 25, "seed": 0, "dataset.eval_split": "test",
    "optimizer.name": "adam", "optimizer.learning_rate": 0.002, "optimizer.schedule": "cosine",
    "optimizer.warmup_steps": 50, "optimizer.grad_clip_norm": 10.0,
}
# name -> (shipped config, overrides beyond COMMON)
RUNS: Dict[str, Tuple[str, Dict[str, object]]] = {
    "joint": ("multitask_shapes", {}),
    "classification": ("multitask_shapes", {"task.heads": ("classification",)}),
    "detection": ("faster_rcnn_shapes", {}),
    "segmentation": ("fcn8s_shapes", {}),
    "captioning": ("show_tell_shapes", {}),
}
# task -> (single-task run's metric, joint run's metric), the first of each task the goal's metric.
METRICS: Dict[str, List[Tuple[str, str]]] = {
    "classification": [("eval/classification/accuracy", "eval/classification/accuracy")],
    "detection": [("eval/mAP", "eval/detection/mAP"), ("eval/AP50", "eval/detection/AP50")],
    "segmentation": [("eval/miou", "eval/segmentation/miou")],
    "captioning": [("eval/bleu_4", "eval/captioning/bleu_4"), ("eval/cider", "eval/captioning/cider")],
}


def get_experiment() -> Experiment:
  return Experiment(
      name="multitask_shapes",
      config="multitask_shapes",
      overrides=dict(COMMON),
      metric="eval/segmentation/miou",
      description="Four heads on one small backbone vs each task's own model at equal budget "
                  "(see the module docstring for the single-task runs).")


def _flag(value: object) -> str:
  return repr(value) if isinstance(value, tuple) else str(value)


def command(name: str) -> List[str]:
  config, overrides = RUNS[name]
  flags = [f"--config.{k}={_flag(v)}" for k, v in {**COMMON, **overrides}.items()]
  return [sys.executable, "-m", "research.cli.train", f"--config={config}",
          f"--workdir={os.path.join(WORKDIRS, name)}", *flags]


def run() -> None:
  """Trains every run in turn (a finished run returns at once); wall seconds to WORKDIRS/wall.json."""
  os.makedirs(WORKDIRS, exist_ok=True)
  path = os.path.join(WORKDIRS, "wall.json")
  walls = json.load(open(path)) if os.path.exists(path) else {}
  for name in RUNS:
    start = time.time()
    subprocess.run(command(name), check=True)
    walls.setdefault(name, round(time.time() - start))
    with open(path, "w") as f:
      json.dump(walls, f, indent=1)


def report() -> str:
  """The comparison table (markdown) from the runs' results.json and wall.json."""
  def results(name: str) -> Dict[str, float]:
    with open(os.path.join(WORKDIRS, name, "results.json")) as f:
      return json.load(f)

  walls_path = os.path.join(WORKDIRS, "wall.json")
  walls = json.load(open(walls_path)) if os.path.exists(walls_path) else {}
  joint = results("joint")
  rows = ["| task | metric | single | joint | joint / single | steps | single wall (s) |",
          "|---|---|---|---|---|---|---|"]
  for task, metrics in METRICS.items():
    single = results(task)
    for single_key, joint_key in metrics:
      a, b = single[single_key], joint[joint_key]
      rows.append(f"| {task} | {single_key.split('/')[-1]} | {a:.4f} | {b:.4f} | {b / a:.2f} | "
                  f"{single['step']} | {walls.get(task, '?')} |")
  rows.append(f"| joint (all four) | | | | | {joint['step']} | {walls.get('joint', '?')} |")
  return "\n".join(rows)


if __name__ == "__main__":
  {"run": run, "report": lambda: print(report())}[sys.argv[1] if len(sys.argv) > 1 else "report"]()
