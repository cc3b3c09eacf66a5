"""Exact resume: a run killed (SIGKILL) or preempted (SIGTERM) and restarted with the same command
ends with the same parameters and metrics as an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from research.core.checkpoint import load_variables
from research.core.metrics import read_metrics
from research.core.train import train_and_evaluate
from tests.core_helpers import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 60


def _overrides(data_dir):
  return [f"--config.dataset.data_dir={data_dir}", f"--config.num_train_steps={STEPS}",
          "--config.batch_size=32", "--config.eval_batch_size=64", "--config.log_every_steps=3",
          "--config.eval_every_steps=20", "--config.checkpoint_every_steps=4",
          "--config.async_checkpointing=False", "--config.compilation_cache_dir=",
          "--config.model.dropout_rate=0.3"]


def _config(data_dir):
  from configs.lenet5_digits import get_config
  config = get_config()
  config.dataset.data_dir = data_dir
  config.num_train_steps = STEPS
  config.batch_size = 32
  config.eval_batch_size = 64
  config.log_every_steps = 3
  config.eval_every_steps = 20
  config.checkpoint_every_steps = 4
  config.async_checkpointing = False
  config.compilation_cache_dir = ""
  config.model.dropout_rate = 0.3
  return config


def _command(workdir, data_dir):
  return [sys.executable, "-m", "research.cli.train", "--config",
          os.path.join(ROOT, "configs", "lenet5_digits.py"), "--workdir", workdir] + _overrides(data_dir)


def _start_and_signal(workdir, data_dir, sig, after_step=8):
  """Starts a run in a subprocess and sends `sig` once checkpoint `after_step` exists."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(_command(workdir, data_dir), env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  ckpt = os.path.join(workdir, "checkpoints", str(after_step))
  deadline = time.time() + 300
  while not os.path.isdir(ckpt):
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    assert time.time() < deadline
    time.sleep(0.02)
  proc.send_signal(sig)
  out = proc.communicate(timeout=300)[0].decode()
  assert not os.path.exists(os.path.join(workdir, "results.json")), "run finished before the signal"
  return proc.returncode, out


def _scored(records):
  return [{k: v for k, v in r.items() if k == "step" or k.startswith(("train/", "eval/"))}
          for r in records]


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  result = train_and_evaluate(_config(data_dir), workdir)
  return workdir, result


def _assert_same_run(workdir, reference):
  ref_vars, vars_ = load_variables(reference), load_variables(workdir)
  for a, b in zip(jax.tree_util.tree_leaves(ref_vars), jax.tree_util.tree_leaves(vars_)):
    np.testing.assert_array_equal(a, b)
  assert _scored(read_metrics(workdir)) == _scored(read_metrics(reference))


def test_sigkill_and_restart_equals_uninterrupted(data_dir, tmp_path, uninterrupted):
  reference, _ = uninterrupted
  workdir = str(tmp_path / "killed")
  code, _ = _start_and_signal(workdir, data_dir, signal.SIGKILL)
  assert code == -signal.SIGKILL
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  subprocess.run(_command(workdir, data_dir), env=env, cwd=ROOT, check=True, capture_output=True)
  _assert_same_run(workdir, reference)


def test_sigterm_saves_and_resume_equals_uninterrupted(data_dir, tmp_path, uninterrupted):
  reference, result = uninterrupted
  workdir = str(tmp_path / "preempted")
  code, out = _start_and_signal(workdir, data_dir, signal.SIGTERM)
  assert code == 75, out[-3000:]  # preempted (EX_TEMPFAIL): rerun to resume
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert steps[-1] % 4 != 0 or steps[-1] >= 8  # a checkpoint at the step where SIGTERM landed
  resumed = train_and_evaluate(_config(data_dir), workdir)
  assert resumed == result
  _assert_same_run(workdir, reference)


def test_finished_run_returns_stored_results(data_dir, uninterrupted):
  workdir, result = uninterrupted
  assert train_and_evaluate(_config(data_dir), workdir) == result


@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_checkpoints_keep_each_metric_sum_and_count(uninterrupted):
  """The step keeps the train metrics as two vectors (research.core.metrics.TrainSums); a
  checkpoint holds them per metric, {name: (sum, count)}: at step 56 (last log at 54), 2 steps."""
  import orbax.checkpoint as ocp
  from research.core.metrics import TrainSums
  workdir, _ = uninterrupted
  tree = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", "56", "state"))
  accum = {k: tuple(np.asarray(x) for x in v) for k, v in tree["accum"].items()}
  assert "loss" in accum and "weight_norm/conv1" in accum
  assert all(count == 2.0 for _, count in accum.values())
  sums = TrainSums(sorted(accum))
  vectors = sums.from_tree(accum)
  assert [v.shape for v in vectors] == [(len(accum),)] * 2
  assert {k: tuple(map(float, v)) for k, v in sums.to_tree(vectors).items()} == {
      k: tuple(map(float, v)) for k, v in accum.items()}
  assert sums.means(vectors)["loss"] == pytest.approx(float(accum["loss"][0]) / 2)
  added = jax.jit(sums.add)(vectors, {k: np.float32(1.0) for k in sums.names})
  np.testing.assert_allclose(added[0], vectors[0] + 1.0)
  np.testing.assert_array_equal(added[1], np.full(len(accum), 3.0, np.float32))
