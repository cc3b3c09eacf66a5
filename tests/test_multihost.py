"""Two processes x 2 CPU devices (gloo collectives) train exactly like one process x 4 devices."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from research.core.checkpoint import load_variables
from research.core.metrics import read_metrics
from research.data import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")


def _env(devices, **extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.update(extra)
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(data_dir, tmp_path):
  datasets.get_builder("digits", data_dir)  # prepare once, before the processes start
  single = str(tmp_path / "single")
  out = subprocess.run([sys.executable, WORKER, single, data_dir], env=_env(4), cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  multi = str(tmp_path / "multi")
  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen([sys.executable, WORKER, multi, data_dir], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(2, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2",
                                     JAX_PROCESS_ID=str(i))) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (stdout, stderr) in zip(procs, outs):
    assert p.returncode == 0, stderr[-3000:]
  assert "RESULT 0 2 4" in outs[0][0] and "RESULT 1 2 4" in outs[1][0]
  a, b = load_variables(single), load_variables(multi)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  single_eval = [r for r in read_metrics(single) if "eval/accuracy" in r]
  multi_eval = [r for r in read_metrics(multi) if "eval/accuracy" in r]
  assert [r["step"] for r in single_eval] == [r["step"] for r in multi_eval]
  for r, s in zip(single_eval, multi_eval):
    assert abs(r["eval/accuracy"] - s["eval/accuracy"]) < 1e-6
