"""One process of a multi-process run (launched by test_multihost.py): 2 CPU devices per process.

Usage: python tests/multihost_worker.py WORKDIR DATA_DIR   (JAX_COORDINATOR_ADDRESS etc. in env for
several processes; without them a single process runs on all its local devices).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

from research.core import parallel  # noqa: E402
from research.core.train import train_and_evaluate  # noqa: E402
from tests.core_helpers import small_config  # noqa: E402


def main(workdir: str, data_dir: str) -> None:
  parallel.maybe_initialize_distributed()
  config = small_config(data_dir, steps=6)
  config.eval_batch_size = 48  # 360 test examples: 7 full batches + one of 24
  config.async_checkpointing = False
  result = train_and_evaluate(config, workdir)
  print("RESULT", jax.process_index(), jax.process_count(), jax.device_count(), result["eval/accuracy"])


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
