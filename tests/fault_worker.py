"""Processes of test_faults.py.

  python tests/fault_worker.py multihost WORKDIR DATA_DIR
      one process of a 2-process run (JAX_COORDINATOR_ADDRESS etc. in the environment) that trains
      until a signal stops it; prints "STOPPED <process> <step>" and exits 75 when preempted.
  python tests/fault_worker.py enospc FAIL_STEP TRAIN_ARGS...
      research-train whose metric writes fail with ENOSPC (a full disk) from step FAIL_STEP on.
"""
import errno
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def multihost(workdir: str, data_dir: str) -> int:
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from research.core import parallel
  from research.core.train import train_and_evaluate
  from tests.core_helpers import small_config
  parallel.maybe_initialize_distributed()
  config = small_config(data_dir, steps=100000)
  config.log_every_steps = 2
  config.checkpoint_every_steps = 1000
  config.eval_every_steps = 0
  config.async_checkpointing = False
  result = train_and_evaluate(config, workdir)
  print("STOPPED", jax.process_index(), result["step"], flush=True)
  return 75 if result.get("preempted") else 0


def enospc(fail_step: int, train_args: list) -> None:
  from research.core import metrics
  write = metrics.MetricWriter.write_scalars

  def full_disk(self, step, scalars):
    if step >= fail_step:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
    return write(self, step, scalars)

  metrics.MetricWriter.write_scalars = full_disk
  from research.cli import train
  sys.argv = ["research-train"] + train_args
  train.run()


if __name__ == "__main__":
  if sys.argv[1] == "multihost":
    sys.exit(multihost(sys.argv[2], sys.argv[3]))
  enospc(int(sys.argv[2]), sys.argv[3:])
