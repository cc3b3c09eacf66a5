"""Train and evaluate one config:  research-train --config configs/X.py --workdir DIR

Any config field can be overridden: --config.optimizer.learning_rate=0.05 --config.num_train_steps=100.
Re-running the same command resumes from the workdir's latest checkpoint. Exit status: 0 finished,
75 preempted (SIGTERM or Ctrl-C saved a checkpoint; run again to resume), 2 an expected error
(one line `error: ...`), 1 a bug (traceback), 130 a second Ctrl-C (research.cli.app).
"""
from __future__ import annotations

import json
import os

import jax
from absl import flags, logging
from ml_collections import config_flags

import research.models  # noqa: F401  (registers models)
import research.tasks  # noqa: F401  (registers tasks)
from research.cli import shipped
from research.cli.app import EXIT_PREEMPTED, run_app
from research.core import parallel
from research.core.train import train_and_evaluate
from research.models import cpu_dispatch

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (get_config()).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries:
  """Drops INFO records of orbax and grain (one line per file written), keeping warnings."""

  def filter(self, record) -> bool:
    noisy = any(f"/{lib}/" in record.pathname for lib in ("orbax", "grain"))
    return record.levelno >= 30 or not noisy


def record_kernel_choices(workdir: str) -> None:
  """WORKDIR/kernel_choices.json: the implementation each convolution, BatchNorm and pooling layer
  of this run's programs took (research.models.cpu_dispatch.decisions(): functions of the rules
  version, the native build and the layer shapes, so the same on every process). A resumed run
  whose choices differ from the stored ones (another CPU kind, another rules version) says so."""
  if jax.process_index() != 0 or not os.path.isdir(workdir):
    return
  path = os.path.join(workdir, "kernel_choices.json")
  choices = cpu_dispatch.decisions()
  if os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
    keys = ("rules_version", "native_build", "families", "convolutions")
    if any(stored.get(k) != choices.get(k) for k in keys if choices.get(k)):
      logging.warning("this run's layer implementations differ from those it started with (%s): the "
                      "resumed steps run other (numerically equivalent) programs", path)
  with open(path + ".tmp", "w") as f:
    json.dump(choices, f, indent=1)
  os.replace(path + ".tmp", path)


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  parallel.maybe_initialize_distributed()
  try:
    result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  finally:
    record_kernel_choices(_WORKDIR.value)
  logging.info("result: %s", result)
  if result.get("preempted"):
    print(f"preempted at step {result['step']}: checkpoint saved; run the same command to resume")
    return EXIT_PREEMPTED
  print("final:", {k: (round(v, 5) if isinstance(v, float) else v) for k, v in result.items()
                   if k.count("/") <= 1})


def run() -> None:
  """Console entry point; `--config` takes a path or a shipped config's name."""
  run_app(main, prepare_argv=shipped.resolve_config_flag, skip_teardown=True)


if __name__ == "__main__":
  run()
