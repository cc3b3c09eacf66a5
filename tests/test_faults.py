"""Fault injection: a run never loses work and never lies (issue 19), and `research-runs` (issue 22).

Each scenario of the issue, with real processes where it is about processes (SIGKILL, a second
trainer on a busy workdir, a sweep rerun while its trial runs, Ctrl-C, SIGTERM to one process of
a two-process run, a full disk), asserting that nothing is lost (checkpoints, results, metrics
lines unique and in order) and the message the user sees. Tiny runs: LeNet-5 on `digits`.
"""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from research.cli import runs as runs_cli
from research.core import parallel, preflight, workdir as workdir_lib
from research.core.checkpoint import load_variables
from research.core.config import load_config_file, validate
from research.core.errors import (CheckpointError, ConfigError, DataRecordError, MissingPackageError,
                                   MissingRunError)
from research.core.metrics import read_metrics
from research.core.train import Trainer, _StopRequest, train_and_evaluate
from research.data import datasets
from research.sweeps.experiment import Trial
from research.sweeps.local import LocalRunner, SweepDir
from research.tasks.classification import ClassificationTask
from research.tasks.gan import GANTask
from tests.core_helpers import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "lenet5_digits.py")
WORKER = os.path.join(ROOT, "tests", "fault_worker.py")
CACHE = {}  # the module's persistent compilation cache (see the `compilation_cache` fixture)


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA compilation cache for this module's runs (a field free to change on
  resume), so the many small runs of the same model compile once."""
  CACHE["dir"] = str(tmp_path_factory.mktemp("jax_cache"))
  yield CACHE["dir"]


def _small(data_dir, steps=8):
  config = small_config(data_dir, steps)
  config.compilation_cache_dir = CACHE["dir"]
  return config


def _env(devices=8, **extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONPATH=ROOT)
  env.update(extra)
  return env


def _cli_overrides(data_dir, **fields):
  overrides = {"dataset.data_dir": data_dir, "num_train_steps": 100000, "batch_size": 16,
               "eval_batch_size": 120, "log_every_steps": 5, "eval_every_steps": 0,
               "checkpoint_every_steps": 10, "async_checkpointing": False,
               "compilation_cache_dir": CACHE["dir"]}
  overrides.update(fields)
  return overrides


def _train_command(workdir, overrides):
  return [sys.executable, "-m", "research.cli.train", "--config", CONFIG, "--workdir", workdir] + [
      f"--config.{k}={v}" for k, v in overrides.items()]


def _cli_config(overrides):
  """The config the command line above builds, in-process."""
  config = load_config_file(CONFIG)
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _wait_for(predicate, proc, timeout=240):
  deadline = time.time() + timeout
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(proc.communicate()[0][-3000:])
    assert time.time() < deadline, "timed out"
    time.sleep(0.05)


def _state(workdir):
  return workdir_lib.read_json(os.path.join(workdir, "run_state.json")) or {}


def _steps_in_order(workdir):
  """The steps of metrics.jsonl's records; asserts train lines and eval lines each unique and
  increasing."""
  records = read_metrics(workdir)
  for kind in ("train/loss", "eval/accuracy"):
    steps = [r["step"] for r in records if kind in r]
    assert steps == sorted(set(steps)), (kind, steps)
  return records


def _checkpoints(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def _copy(workdir, to):
  shutil.copytree(workdir, to)
  return str(to)


def _in_process_config(data_dir):
  config = _small(data_dir, steps=12)
  config.log_every_steps = 3
  config.eval_every_steps = 6
  config.checkpoint_every_steps = 6
  config.async_checkpointing = False
  return config


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
  """A 12-step run whose first evaluation (step 6, also a checkpoint step) failed once: the rerun
  resumed at 6, ran that evaluation, and finished. Returns (workdir, result, metrics at failure)."""
  datasets.get_builder("digits", data_dir)
  workdir = str(tmp_path_factory.mktemp("finished"))
  config = _in_process_config(data_dir)
  evaluate = Trainer.evaluate

  def failing(self, state):
    raise RuntimeError("evaluation crashed")

  Trainer.evaluate = failing
  try:
    with pytest.raises(RuntimeError, match="evaluation crashed"):
      train_and_evaluate(config, workdir)
  finally:
    Trainer.evaluate = evaluate
  at_failure = (_checkpoints(workdir), _state(workdir), os.path.exists(os.path.join(workdir, "results.json")))
  result = train_and_evaluate(_in_process_config(data_dir), workdir)
  return workdir, result, at_failure


def test_failure_at_evaluation_loses_no_training(finished_run):
  workdir, result, (checkpoints, state, had_results) = finished_run
  assert checkpoints == [6], "the checkpoint of step 6 was saved before its evaluation"
  assert state["state"] == "failed" and "evaluation crashed" in state["error"] and not had_results
  records = _steps_in_order(workdir)
  assert [r["step"] for r in records if "eval/accuracy" in r] == [6, 12]
  assert [r["step"] for r in records if "train/loss" in r] == [3, 6, 9, 12]
  assert result["step"] == 12 and 0 < result["eval/accuracy"] <= 1
  assert workdir_lib.read_json(os.path.join(workdir, "results.json")) == result
  assert _state(workdir)["state"] == "finished" and _state(workdir)["last_checkpoint"] == 12


def test_missing_results_are_reevaluated(finished_run, tmp_path, data_dir):
  source, result, _ = finished_run
  # results.json deleted after the final evaluation was logged: taken from the log.
  workdir = _copy(source, tmp_path / "a")
  os.remove(os.path.join(workdir, "results.json"))
  assert train_and_evaluate(_in_process_config(data_dir), workdir) == result
  # killed during the final evaluation (no eval line, no results): the checkpoint is re-evaluated.
  workdir = _copy(source, tmp_path / "b")
  os.remove(os.path.join(workdir, "results.json"))
  records = read_metrics(workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for r in records:
      if not (r["step"] == 12 and "eval/accuracy" in r):
        f.write(json.dumps(r) + "\n")
  again = train_and_evaluate(_in_process_config(data_dir), workdir)
  assert again == result
  assert [r["step"] for r in _steps_in_order(workdir) if "eval/accuracy" in r] == [6, 12]
  assert workdir_lib.read_json(os.path.join(workdir, "results.json")) == result


def test_signal_during_the_last_step_still_finishes(finished_run, tmp_path, data_dir, monkeypatch):
  source, _, _ = finished_run
  workdir = _copy(source, tmp_path / "run")
  prefetch = parallel.prefetch_to_device

  def signalling(batches, mesh, size=2):
    for i, batch in enumerate(prefetch(batches, mesh, size)):
      if i == 2:  # resumed at step 12: this batch is the last step's (15)
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  monkeypatch.setattr(parallel, "prefetch_to_device", signalling)
  config = _in_process_config(data_dir)
  config.num_train_steps = 15
  config.checkpoint_every_steps = 0  # 0: only at the end (and on a signal)
  result = train_and_evaluate(config, workdir)
  assert result["step"] == 15 and "eval/accuracy" in result and "preempted" not in result
  assert workdir_lib.read_json(os.path.join(workdir, "results.json")) == result
  assert _state(workdir)["state"] == "finished" and _checkpoints(workdir) == [6, 12, 15]


def test_resume_compares_the_config(finished_run, tmp_path, data_dir):
  source, result, _ = finished_run
  workdir = _copy(source, tmp_path / "run")
  for field, value, shown in (("optimizer.learning_rate", 0.5, "optimizer.learning_rate: 0.05 -> 0.5"),
                              ("batch_size", 64, "batch_size: 32 -> 64")):
    config = _in_process_config(data_dir)
    config.update_from_flattened_dict({field: value})
    with pytest.raises(ConfigError, match="resume_config_change=allow") as e:
      train_and_evaluate(config, workdir)
    assert shown in str(e.value) and "another --workdir" in str(e.value)
  config = _in_process_config(data_dir)
  config.log_every_steps = 2  # free to change: the finished run returns its results
  assert train_and_evaluate(config, workdir) == result
  config.num_train_steps = 15  # the duration may change (with a warning): 3 more steps
  longer = train_and_evaluate(config, workdir)
  assert longer["step"] == 15 and _checkpoints(workdir)[-1] == 15
  history = workdir_lib.config_history(workdir)
  assert [s for s, _ in history] == [0, 12]
  assert history[0][1]["num_train_steps"] == 12 and history[1][1]["num_train_steps"] == 15
  assert workdir_lib.read_json(os.path.join(workdir, "config.json")) == history[1][1]
  # a different model with resume_config_change=allow: the checkpoint does not fit, said clearly
  config.model.name, config.resume_config_change = "test_bn_dropout_cnn", "allow"
  with pytest.raises(CheckpointError, match="does not fit this model"):
    train_and_evaluate(config, workdir)
  # --compare A B: config differences and final metrics side by side
  text = runs_cli.compare(source, workdir)
  assert any(line.split()[:3] == ["num_train_steps", "12", "15"] for line in text.splitlines())
  assert "eval/accuracy" in text and "learning_rate" not in text


def test_unreadable_checkpoint_is_moved_aside(finished_run, tmp_path, data_dir):
  source, result, _ = finished_run
  workdir = _copy(source, tmp_path / "run")
  os.remove(os.path.join(workdir, "results.json"))
  data = os.path.join(workdir, "checkpoints", "12", "state", "d")
  for name in os.listdir(data):
    open(os.path.join(data, name), "w").close()  # truncated to 0 bytes
  assert train_and_evaluate(_in_process_config(data_dir), workdir) == result  # retrained 6 -> 12
  assert os.path.isdir(os.path.join(workdir, "checkpoints_unreadable", "12"))
  for a, b in zip(jax.tree_util.tree_leaves(load_variables(source)),
                  jax.tree_util.tree_leaves(load_variables(workdir))):
    np.testing.assert_array_equal(a, b)
  _steps_in_order(workdir)
  # every checkpoint unreadable (an empty step folder): a clear error, nothing deleted
  for step in _checkpoints(workdir):
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
    os.makedirs(os.path.join(workdir, "checkpoints", str(step)))
  with pytest.raises(CheckpointError, match="no readable checkpoint"):
    train_and_evaluate(_in_process_config(data_dir), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints_unreadable"))) == ["12", "12.1", "6"]


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "config.batch_size must be > 0"),
    ("log_every_steps", 0, "config.log_every_steps must be >= 1"),
    ("checkpoint_every_steps", -1, "config.checkpoint_every_steps must be >= 1, or 0"),
    ("keep_checkpoints", 0, "config.keep_checkpoints must be >= 1"),
    ("optimizer.learning_rate", -0.1, "config.optimizer.learning_rate must be >= 0"),
    ("dataset.prefetch_batches", 0, "config.dataset.prefetch_batches must be >= 1"),
    ("model.dropout_rat", 0.1, "unknown config key 'model.dropout_rat' .*did you mean 'dropout_rate'"),
    ("task.label_smoothin", 0.1, "unknown config key 'task.label_smoothin' .*did you mean 'label_smoothing'"),
])
def test_bad_config_values_name_the_field(field, value, message):
  config = small_config("unused")
  *parents, leaf = field.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError, match=message):
    validate(config)


def test_start_up_checks_fail_before_training(data_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(ClassificationTask, "required_packages",
                      classmethod(lambda cls, cfg: {"no_such_eval_package": "no-such-eval-package>=1"}))
  workdir = str(tmp_path / "run")
  with pytest.raises(MissingPackageError, match="pip install 'no-such-eval-package>=1'"):
    train_and_evaluate(_small(data_dir), workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  assert _state(workdir)["state"] == "failed"
  config = small_config(data_dir)
  config.task = ConfigDict({"name": "gan", "classifier_workdir": str(tmp_path / "no_classifier")})
  with pytest.raises(MissingRunError, match="is not a trained run.*research-train"):
    preflight.check_runs(GANTask, config)
  monkeypatch.undo()
  config = _small(data_dir)
  config.dataset.eval_split = "validation"
  with pytest.raises(ConfigError, match="config.dataset.eval_split: dataset 'digits' has no split 'validation'"):
    train_and_evaluate(config, str(tmp_path / "run2"))


def test_second_ctrl_c_stops_at_once():
  with _StopRequest() as stop:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)
    assert stop.requested and stop.signal_name == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.01)
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_corrupt_record_names_the_file(finished_run, data_dir, tmp_path):
  copy = str(tmp_path / "tfds")
  shutil.copytree(data_dir, copy)
  shard = next(f for f in glob.glob(os.path.join(copy, "digits", "*", "digits-test.array_record*")))
  with open(shard, "r+b") as f:
    f.seek(os.path.getsize(shard) // 3)
    f.write(b"\xff" * 4000)
  with pytest.raises(DataRecordError, match=r"'test': record \d+ cannot be read from .*digits-test\.array_record"
                                            r".*prepare the dataset again"):
    train_and_evaluate(_small(copy), str(tmp_path / "run"))


@pytest.fixture(scope="module")
def nan_run(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("runs") / "nan")
  config = _small(data_dir, steps=40)
  config.log_every_steps = 4
  config.checkpoint_every_steps = 4
  config.eval_every_steps = 0
  config.optimizer.learning_rate = 1e6
  config.optimizer.schedule = "constant"
  with pytest.raises(FloatingPointError, match="NaN/Inf"):
    train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def multihost_preempted(data_dir, tmp_path_factory):
  """A two-process run, SIGTERM sent to process 1 only: both stop at the same step."""
  workdir = str(tmp_path_factory.mktemp("runs") / "multihost")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{s.getsockname()[1]}"
  procs = [subprocess.Popen([sys.executable, WORKER, "multihost", workdir, data_dir], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=_env(2, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2",
                                     JAX_PROCESS_ID=str(i))) for i in range(2)]
  _wait_for(lambda: _state(workdir).get("step", 0) >= 4, procs[0])
  procs[1].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=240)[0] for p in procs]
  return workdir, [p.returncode for p in procs], outs


def test_multihost_sigterm_stops_every_process_at_one_step(multihost_preempted):
  workdir, codes, outs = multihost_preempted
  assert codes == [75, 75], [o[-2000:] for o in outs]
  steps = [int(next(line for line in o.splitlines() if line.startswith("STOPPED")).split()[2]) for o in outs]
  assert steps[0] == steps[1] and steps[0] % 2 == 0  # agreed at a log step
  assert _checkpoints(workdir) == [steps[0]]
  assert _state(workdir)["state"] == "preempted" and _state(workdir)["step"] == steps[0]


@pytest.fixture(scope="module")
def disk_full(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("runs") / "disk_full")
  args = ["--config", CONFIG, "--workdir", workdir] + [
      f"--config.{k}={v}" for k, v in _cli_overrides(data_dir).items()]
  out = subprocess.run([sys.executable, WORKER, "enospc", "15", *args], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
  return workdir, out


def test_disk_full_is_one_line_and_keeps_the_checkpoint(disk_full):
  workdir, out = disk_full
  assert out.returncode == 2, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "disk full writing" in errors[0] and "metrics.jsonl" in errors[0]
  assert "Traceback" not in out.stderr + out.stdout
  assert _checkpoints(workdir) == [10]
  assert _state(workdir)["state"] == "failed" and "No space left" in _state(workdir)["error"]


def test_processes_busy_sweep_ctrl_c_kill_and_runs(data_dir, tmp_path, finished_run, nan_run,
                                                   multihost_preempted, disk_full, caplog):
  """A trial of a sweep runs; a second trainer on its workdir and a sweep rerun do not start it
  twice; Ctrl-C saves and exits 75; a restarted run is SIGKILLed; `runs` tells each state; the
  finished rerun has every metrics line once, in order."""
  root = tmp_path / "runs"
  shutil.copytree(finished_run[0], root / "finished")
  shutil.copytree(nan_run, root / "nan")
  shutil.copytree(multihost_preempted[0], root / "preempted")
  shutil.copytree(disk_full[0], root / "disk_full")
  sweep = SweepDir(str(root / "sweep"))
  overrides = _cli_overrides(data_dir)
  trial = Trial({"seed": 0}, {"seed": 0})
  workdir = sweep.workdir(trial)
  proc = subprocess.Popen(_train_command(workdir, overrides), cwd=ROOT, env=_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  _wait_for(lambda: (_state(workdir).get("last_checkpoint") or 0) >= 10, proc)
  assert workdir_lib.run_status(workdir)["state"] == "running"
  second = subprocess.run(_train_command(workdir, overrides), cwd=ROOT, env=_env(), text=True,
                          capture_output=True, timeout=120)
  assert second.returncode == 2, second.stderr[-2000:]
  assert f"is in use by another run: pid {proc.pid} on host {socket.gethostname()}" in second.stderr
  assert "Traceback" not in second.stderr
  result = LocalRunner(sweep, CONFIG).run_one(trial)
  assert result.status == "running" and sweep.events() == []
  # Ctrl-C: a checkpoint at the step it landed in, exit 75, state "preempted".
  proc.send_signal(signal.SIGINT)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 75, out[-3000:]
  stopped = _state(workdir)
  assert stopped["state"] == "preempted" and _checkpoints(workdir)[-1] == stopped["step"]
  # Restarted, then killed: reported as killed; meanwhile `runs --json` lists every state.
  proc = subprocess.Popen(_train_command(workdir, overrides), cwd=ROOT, env=_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  _wait_for(lambda: _state(workdir).get("step", 0) >= stopped["step"] + 10, proc)
  listed = subprocess.run([sys.executable, "-m", "research.cli.runs", str(root), "--json"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=120)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert listed.returncode == 0, listed.stderr[-2000:]
  states = {r["name"]: r["state"] for r in json.loads(listed.stdout)}
  nan = next(r for r in json.loads(listed.stdout) if r["name"] == "nan")
  assert nan["step"] > 0 and "NaN/Inf" in nan["error"]
  assert states == {"finished": "finished", "nan": "nan", "preempted": "preempted", "disk_full": "failed",
                    os.path.relpath(workdir, root): "running"}
  finished = next(r for r in json.loads(listed.stdout) if r["name"] == "finished")
  assert finished["metric"] == "eval/accuracy" and finished["step"] == finished["num_steps"] == 12
  assert finished["last"] == finished_run[1]["eval/accuracy"] and finished["best"] >= finished["last"]
  killed = workdir_lib.run_status(workdir)
  assert killed["state"] == "failed" and killed["error"].startswith("killed")
  table = runs_cli.table([runs_cli.describe(w, str(root)) for w in workdir_lib.find_runs(str(root))])
  assert "failed (killed)" in table and "stopped on NaN" in table and "preempted" in table
  # Finished in-process with a shorter duration: nothing lost, nothing twice.
  last = _checkpoints(workdir)[-1]
  with caplog.at_level("WARNING"):
    final = train_and_evaluate(_cli_config(_cli_overrides(data_dir, num_train_steps=last + 7)), workdir)
  assert "taking over from pid" in caplog.text and "which is no longer running" in caplog.text
  assert final["step"] == last + 7 and "eval/accuracy" in final
  records = _steps_in_order(workdir)
  assert [r["step"] for r in records if "train/loss" in r] == list(range(5, last + 7, 5)) + [last + 7]
  assert workdir_lib.run_status(workdir)["state"] == "finished"
  assert LocalRunner(sweep, CONFIG).run_one(trial).status == "skipped"


def test_misspelled_key_on_the_command_line_is_one_line(tmp_path):
  out = subprocess.run(_train_command(str(tmp_path / "w"), {"model.dropout_rat": 0.1}), cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1] == (
      "error: unknown config key 'model.dropout_rat' (did you mean 'dropout_rate'?) in "
      "--config.model.dropout_rat=0.1; known keys here: activation, dropout_rate, first_padding, "
      "kernel_init, name, pooling")
  assert "Traceback" not in out.stderr


def test_config_changes_are_classified():
  stored = workdir_lib.config_json(small_config("d"))
  new = workdir_lib.config_json(small_config("elsewhere"))
  new["model"]["activation"] = "relu"      # the model's default, listed explicitly: no change
  new["task"]["label_smoothing"] = 0.0     # the task's default: no change
  new["log_every_steps"], new["dataset"]["num_workers"] = 7, 2
  new["num_train_steps"] = 9
  assert workdir_lib.config_changes(stored, new) == (
      [], ["num_train_steps: 8 -> 9"],
      ['dataset.data_dir: "d" -> "elsewhere"', "dataset.num_workers: 0 -> 2", "log_every_steps: 3 -> 7"])
  new["model"]["activation"], new["seed"] = "tanh", 1
  assert workdir_lib.config_changes(stored, new)[0] == [
      'model.activation: (absent) -> "tanh"', "seed: 0 -> 1"]
