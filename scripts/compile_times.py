"""Compile time of the first training step, per config, cold and from the persistent cache.

  python scripts/compile_times.py [CONFIG ...]      (default: every config on built-in data)

Each config is measured in two fresh processes sharing one new compilation cache directory: the
first compiles (cold), the second should read the cache (cached). Printed per config: the wall
and process CPU seconds of the train step's `lower().compile()` and the seconds to build the
Trainer (dataset, init compile). CPU seconds do not grow with the machine's load as wall seconds do.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time


def builtin_configs() -> list:
  """Names of the shipped configs that train on the built-in data."""
  here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
  names = [os.path.basename(p)[:-3] for p in glob.glob(os.path.join(here, "*.py"))]
  return sorted(n for n in names if n.endswith(("_digits", "_shapes")) or n == "char_rnn")


def measure(name: str, cache_dir: str, workdir: str) -> dict:
  """In this process: builds the Trainer for `name` and compiles its train step."""
  import jax
  import research.models  # noqa: F401
  import research.tasks  # noqa: F401
  from research.cli import shipped
  from research.core import parallel
  from research.core.train import Trainer
  import importlib.util

  spec = importlib.util.spec_from_file_location("cfg", shipped.resolve(name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.compilation_cache_dir = cache_dir
  if "classifier_workdir" in config.task:  # GAN sample metrics: not part of the train step
    config.task.classifier_workdir = ""
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  start, start_cpu = time.perf_counter(), time.process_time()
  trainer = Trainer(config, workdir)
  setup, setup_cpu = time.perf_counter() - start, time.process_time() - start_cpu
  accum = parallel.replicate(trainer.zero_accum, trainer.mesh)
  wall, cpu = time.perf_counter(), time.process_time()
  trainer._compile_train_step(accum)
  return {"config": name, "setup_s": round(setup, 2), "setup_cpu_s": round(setup_cpu, 2), "compile_wall_s": round(time.perf_counter() - wall, 2),
          "compile_cpu_s": round(time.process_time() - cpu, 2)}


def main(argv: list) -> None:
  if argv[:1] == ["--one"]:
    print("RESULT", json.dumps(measure(*argv[1:4])), flush=True)
    return
  for name in argv or builtin_configs():
    cache = tempfile.mkdtemp(prefix="jax_cache_")
    row = {"config": name}
    for run in ("cold", "cached"):
      workdir = tempfile.mkdtemp(prefix="ct_")
      out = subprocess.run([sys.executable, __file__, "--one", name, cache, workdir],
                           capture_output=True, text=True)
      lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
      if not lines:
        row[run] = "failed: " + out.stderr.strip().splitlines()[-1]
        continue
      r = json.loads(lines[0][7:])
      row[run] = {k: v for k, v in r.items() if k != "config"}
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
