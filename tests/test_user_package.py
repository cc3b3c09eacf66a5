"""Users register their own model, task and dataset from their own package (tests/user_pkg, outside
research/) and train them through research-train with a config file that imports that package."""
import json
import math
import os
import pathlib
import subprocess
import sys

from research.core.metrics import read_metrics

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_user_model_task_and_dataset_train_through_research_train(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
  workdir = tmp_path / "run"
  command = [sys.executable, "-m", "research.cli.train", f"--config={ROOT / 'tests' / 'user_pkg' / 'config.py'}",
             f"--workdir={workdir}", f"--config.dataset.data_dir={tmp_path / 'tfds'}"]
  done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((workdir / "results.json").read_text())
  assert results["step"] == 4 and 0.0 <= results["eval/accuracy"] <= 1.0
  config = json.loads((workdir / "config.json").read_text())
  assert (config["model"]["name"], config["task"]["name"], config["dataset"]["name"]) == (
      "user_mlp", "user_classification", "user_bars")
  train = [r for r in read_metrics(str(workdir)) if "train/loss" in r]
  assert [r["step"] for r in train] == [2, 4]
  assert all(math.isfinite(r["train/top_logit"]) for r in train)  # the user's task's own metric
  assert (tmp_path / "tfds" / "user_bars").is_dir()  # generated on first use
