"""Experiments and sweeps: expansion and trial ids, the local runner (kill and resume, failures),
the SLURM array script, submitit, Optuna with SQLite, the report, and jax.distributed from a
SLURM environment."""
from __future__ import annotations

import csv
import glob
import json
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from research.sweeps import (Baseline, Experiment, ExperimentError, SlurmResources, choice, grid,
                             load_experiment, loguniform, random_axis, zipped)
from research.sweeps import slurm
from research.sweeps.local import LocalRunner, SweepDir, train_command
from research.sweeps.report import write_report
from research.sweeps.search import optuna_search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_CONFIG = "configs/lenet5_digits.py"

# Stands in for research-train where the test is about the sweep machinery, not training: takes
# the same flags, writes metrics.jsonl and results.json (accuracy peaks at lr 0.03), fails on lr >= 1.
FAKE_TRAIN = '''
import json, math, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
workdir, lr = args["workdir"], float(args.get("config.optimizer.learning_rate", "0.1"))
seed = int(args.get("config.seed", "0"))
print("fake train", workdir, "devices", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
if lr >= 1.0:
  print("Traceback (most recent call last):\\nFloatingPointError: loss is NaN at step 3")
  sys.exit(3)
acc = 0.9 - 0.05 * (math.log10(lr) + 1.5) ** 2 + 0.001 * seed
os.makedirs(workdir, exist_ok=True)
with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
  for step in (10, 20):
    f.write(json.dumps({"step": step, "train/loss": 1.0 / step / lr}) + "\\n")
  f.write(json.dumps({"step": 20, "eval/accuracy": acc, "eval/loss": 1 - acc}) + "\\n")
with open(os.path.join(workdir, "results.json"), "w") as f:
  json.dump({"step": 20, "eval/accuracy": acc, "eval/loss": 1 - acc, "eval/recall/0": 0.5,
             "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}, f)
'''


@pytest.fixture
def fake_train(tmp_path) -> str:
  path = tmp_path / "fake_train.py"
  path.write_text(FAKE_TRAIN)
  return str(path)


def _experiment(**kw) -> Experiment:
  defaults = dict(name="demo", config=DIGITS_CONFIG, overrides={"num_train_steps": 20},
                  sweep=[grid("optimizer.learning_rate", [0.01, 0.1])], seeds=(0, 1))
  return Experiment(**{**defaults, **kw})


def _starts(sweep: SweepDir) -> dict:
  counts: dict = {}
  for e in sweep.events():
    if e["event"] == "start":
      counts[e["trial"]] = counts.get(e["trial"], 0) + 1
  return counts


# ----------------------------------------------------------------------------------------------
# Definitions.

def test_expand_grid_zip_random_seeds():
  exp = _experiment(sweep=[grid("optimizer.learning_rate", [0.01, 0.1]),
                           zipped({"batch_size": [32, 64], "optimizer.warmup_steps": [0, 5]}),
                           random_axis("optimizer.weight_decay", loguniform(1e-5, 1e-3)),
                           random_axis("optimizer.name", choice(["sgd", "adam"]))],
                    num_samples=3, sample_seed=7)
  trials = exp.expand()
  assert len(trials) == 3 * 2 * 2 * 2
  assert [t.swept["seed"] for t in trials[:4]] == [0, 1, 0, 1]  # seeds innermost
  assert {(t.swept["batch_size"], t.swept["optimizer.warmup_steps"]) for t in trials} == {(32, 0), (64, 5)}
  assert all(1e-5 <= t.swept["optimizer.weight_decay"] <= 1e-3 for t in trials)
  assert len({t.id for t in trials}) == len({t.name for t in trials}) == len(trials)
  assert trials[0].overrides["num_train_steps"] == 20
  # Reproducible draws; ids depend on the override dict only, not on order or position.
  assert [t.id for t in exp.expand()] == [t.id for t in trials]
  again = _experiment(sweep=[grid("optimizer.learning_rate", [0.1, 0.01])], seeds=(1, 0))
  assert {t.id for t in again.expand()} == {t.id for t in _experiment().expand()}
  assert trials[0].name.startswith("learning_rate=")
  extra = exp.expand({"dataset.data_dir": "/x"})
  assert all(t.overrides["dataset.data_dir"] == "/x" for t in extra)
  assert {t.id for t in extra}.isdisjoint({t.id for t in trials})


def test_definition_errors():
  with pytest.raises(ExperimentError, match="swept twice: seed"):
    _experiment(sweep=[grid("seed", [0, 1])]).expand()
  with pytest.raises(ExperimentError, match="one non-zero length"):
    zipped({"a": [1, 2], "b": [1]})
  exp = _experiment(overrides={"optimizer.learnig_rate": 0.1})
  with pytest.raises(ExperimentError, match="no field 'optimizer.learnig_rate'.*optimizer.learning_rate"):
    exp.build_config(exp.expand()[0])
  with pytest.raises(ExperimentError, match="cannot set 'num_train_steps'"):
    exp = _experiment(overrides={"num_train_steps": "many"})
    exp.build_config(exp.expand()[0])
  config = _experiment().build_config(_experiment().expand()[3])
  assert (config.optimizer.learning_rate, config.seed, config.num_train_steps) == (0.1, 1, 20)


def test_experiment_files_load_or_name_their_missing_config(tmp_path):
  paths = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")))
  assert len(paths) >= 8
  checked = 0
  for path in paths:
    source = open(path).read()
    config = re.search(r'config="([^"]+)"', source).group(1)
    if os.path.exists(os.path.join(ROOT, "configs", config + ".py")):
      exp = load_experiment(path)
      for trial in exp.expand():
        exp.build_config(trial)  # every override names a real field of a real config
      checked += 1
    else:
      with pytest.raises(ExperimentError, match=re.escape(config)):
        load_experiment(path)
  assert checked >= 2  # lenet5_digits_lr_seed, lenet5_mnist
  assert load_experiment(os.path.join(ROOT, "experiments", "lenet5_mnist.py")).baseline.expected == 0.9905


# ----------------------------------------------------------------------------------------------
# Local runner, report.

def test_failed_trial_is_reported_and_others_run(tmp_path, fake_train):
  exp = _experiment(sweep=[grid("optimizer.learning_rate", [0.03, 3.0, 0.1])], seeds=(0,),
                    baseline=Baseline("eval/accuracy", 0.89, 0.01, "a test"))
  trials = exp.expand()
  sweep = SweepDir(str(tmp_path / "sweep"))
  sweep.register(exp, trials)
  lines = []
  runner = LocalRunner(sweep, exp.config_path, parallel=2, device_groups=["0", "1"],
                       train_script=fake_train, log=lines.append)
  results = runner.run_all(trials)
  assert [r.status for r in results] == ["done", "failed", "done"]
  failure = "\n".join(lines)
  assert "[failed]  learning_rate=3_seed=0" in failure and "exit code 3" in failure
  assert "FloatingPointError: loss is NaN" in failure and "loss is NaN" in results[1].log_tail
  assert {r.metrics["devices"] for r in results if r.status == "done"} <= {"0", "1"}
  # Again: the finished trials are skipped, the failed one runs again.
  results = runner.run_all(trials)
  assert [r.status for r in results] == ["skipped", "failed", "skipped"]
  assert _starts(sweep) == {trials[0].id: 1, trials[1].id: 2, trials[2].id: 1}

  paths = write_report(exp, sweep, str(tmp_path / "report"))
  md = open(paths["markdown"]).read()
  assert "| learning_rate=3_seed=0-" in md and "| failed |" in md
  assert "Best per metric" in md and "| eval/accuracy | max | 0.9000 |" in md
  assert "| eval/accuracy | 0.8900 | 0.0100 | 0.8937 ± 0.0088 (2 trials) | 0.9000 | reproduced | a test |" in md
  with open(paths["csv"]) as f:
    rows = list(csv.DictReader(f))
  assert [r["status"] for r in rows] == ["done", "failed", "done"]
  assert rows[0]["optimizer.learning_rate"] == "0.03" and float(rows[2]["eval/accuracy"]) == pytest.approx(0.8875)
  assert os.path.getsize(paths["curves"]) > 1000 and os.path.getsize(paths["hparams"]) > 1000


def test_sweep_killed_and_restarted_end_to_end(tmp_path, data_dir):
  """4 trials of LeNet-5 on digits (lr x seed): kill the sweep's process group once the first
  trial finished, start it again, get one complete report; no finished trial runs again."""
  experiment_file = tmp_path / "digits_sweep.py"
  experiment_file.write_text(textwrap.dedent(f"""
      from research.sweeps import Experiment, grid
      def get_experiment():
        return Experiment(name="digits_sweep", config={DIGITS_CONFIG!r},
                          overrides={{"num_train_steps": 30, "batch_size": 32, "log_every_steps": 10,
                                      "checkpoint_every_steps": 10, "task.top_k": 1}},
                          sweep=[grid("optimizer.learning_rate", [0.02, 0.05])], seeds=(0, 1))
      """))
  sweep_dir = str(tmp_path / "sweep")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # 1 CPU device per trial
  env["JAX_PLATFORMS"] = "cpu"
  command = [sys.executable, "-m", "research.cli.sweep", str(experiment_file),
             f"--sweep_dir={sweep_dir}", "--parallel=1",
             f"--set=compilation_cache_dir={tmp_path / 'jax_cache'}",  # this test's own cache
             f"--set=dataset.data_dir={data_dir}"]
  sweep = SweepDir(sweep_dir)
  proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, start_new_session=True)
  deadline = time.time() + 300
  while not glob.glob(os.path.join(sweep_dir, "trials", "*", "results.json")):
    assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-3000:]
    time.sleep(0.2)
  first = [t for t in sweep.trials() if sweep.status(t) == "done"]
  while len(_starts(sweep)) < 2:  # the second trial has started
    assert time.time() < deadline
    time.sleep(0.1)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert len(first) == 1

  out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert f"[skip]    {first[0].name}: finished before" in out.stdout
  assert "4 trials: 3 done, 1 skipped" in out.stdout
  trials = sweep.trials()
  assert len(trials) == 4 and all(sweep.status(t) == "done" for t in trials)
  starts = _starts(sweep)
  assert starts[first[0].id] == 1  # the finished trial never ran again
  assert sorted(starts.values()) == [1, 1, 1, 2]  # the killed one started twice
  assert sum(e["event"] == "done" for e in sweep.events()) == 4

  out = subprocess.run([sys.executable, "-m", "research.cli.report",
                        str(experiment_file), f"--sweep_dir={sweep_dir}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  table = [line for line in out.stdout.splitlines() if re.match(r"\| learning_rate=", line)]
  assert len(table) == 4 and all("| done |" in line for line in table)
  assert "Mean ± standard deviation over seeds" in out.stdout
  assert os.path.exists(os.path.join(sweep_dir, "curves.png"))
  assert os.path.exists(os.path.join(sweep_dir, "hparams.png"))


# ----------------------------------------------------------------------------------------------
# SLURM.

SBATCH_OPTIONS = {"job-name", "array", "nodes", "ntasks-per-node", "cpus-per-task", "time", "output",
                  "open-mode", "signal", "requeue", "gpus-per-node", "mem", "partition", "account",
                  "qos", "constraint"}


def test_array_spec():
  assert slurm.array_spec([0, 1, 2, 3]) == "0-3"
  assert slurm.array_spec([5, 0, 1, 3, 7, 8], max_parallel=2) == "0-1,3,5,7-8%2"


def test_sbatch_script_syntax_and_run(tmp_path):
  exp = _experiment(slurm=SlurmResources(nodes=2, gpus_per_node=4, partition="gpu", mem_gb=64))
  trials = exp.expand({"dataset.data_dir": "/data dir/tfds", "model.features": (6, 16)})
  sweep = SweepDir(str(tmp_path / "sweep"))
  sweep.register(exp, trials)
  os.makedirs(sweep.workdir(trials[1]))
  open(os.path.join(sweep.workdir(trials[1]), "results.json"), "w").write("{}")
  path = slurm.write_sbatch(exp, sweep, trials, exp.slurm, max_parallel=2)
  text = open(path).read()
  lines = text.splitlines()
  assert lines[0] == "#!/bin/bash"
  # sbatch reads #SBATCH lines only before the first command: they must all come first.
  first_command = next(i for i, l in enumerate(lines) if l.strip() and not l.startswith("#"))
  directives = [l for l in lines[:first_command] if l.startswith("#SBATCH")]
  assert not any(l.startswith("#SBATCH") for l in lines[first_command:])
  options = {}
  for line in directives:
    m = re.fullmatch(r"#SBATCH --([a-z-]+)(?:=(\S+))?", line)
    assert m, f"not sbatch syntax: {line!r}"
    assert m.group(1) in SBATCH_OPTIONS, m.group(1)
    options[m.group(1)] = m.group(2)
  assert options["array"] == "0,2-3%2"  # trial 1 is finished
  assert re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*(%\d+)?", options["array"])
  assert (options["nodes"], options["ntasks-per-node"], options["gpus-per-node"]) == ("2", "4", "4")
  assert re.fullmatch(r"\d+:\d\d:\d\d", options["time"]) and options["mem"] == "64G"
  assert options["partition"] == "gpu" and "requeue" in options
  assert subprocess.run(["bash", "-n", path]).returncode == 0

  # Run it with an srun that records what it was asked to run.
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  record = tmp_path / "srun.txt"
  (bin_dir / "srun").write_text(
      f'#!/bin/bash\n{{ echo "RESEARCH_DISTRIBUTED=$RESEARCH_DISTRIBUTED"; printf "%s\\n" "$@"; }} > {record}\n')
  (bin_dir / "srun").chmod(stat.S_IRWXU)
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_ARRAY_TASK_ID="2")
  out = subprocess.run(["bash", path], env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  argv = record.read_text().splitlines()
  assert argv[0] == "RESEARCH_DISTRIBUTED=1" and argv[1] == "--kill-on-bad-exit=1"
  expected = train_command(exp.config_path, sweep.workdir(trials[2]), trials[2].overrides)
  assert argv[2] == expected[0] and argv[3:5] == ["-m", "research.cli.train"] and argv[5:] == expected[3:]
  assert "--config.dataset.data_dir=/data dir/tfds" in argv and "--config.model.features=(6, 16)" in argv
  record.unlink()
  out = subprocess.run(["bash", path], env=dict(env, SLURM_ARRAY_TASK_ID="1"), capture_output=True, text=True)
  assert out.returncode == 0 and "finished before" in out.stdout and not record.exists()
  out = subprocess.run(["bash", path], env=dict(env, SLURM_ARRAY_TASK_ID="9"), capture_output=True, text=True)
  assert out.returncode == 1 and "no trial with array index 9" in out.stderr


def test_submitit_array(tmp_path, fake_train):
  pytest.importorskip("submitit")
  exp = _experiment(slurm=SlurmResources(gpus_per_node=0, partition="gpu", mem_gb=8))
  trials = exp.expand()
  sweep = SweepDir(str(tmp_path / "sweep"))
  sweep.register(exp, trials)
  jobs = slurm.submit_with_submitit(exp, sweep, trials, exp.slurm, max_parallel=2, cluster="debug",
                                    train_script=fake_train)
  assert len(jobs) == 4
  assert [job.result() for job in jobs] == [0] * 4
  assert all(sweep.status(t) == "done" for t in trials)
  assert "fake train" in open(os.path.join(sweep.workdir(trials[0]), "train.log")).read()
  assert slurm.submit_with_submitit(exp, sweep, trials, exp.slurm, cluster="debug") == []


def test_distributed_initialize_from_slurm_environment(tmp_path):
  """What srun sets for 2 tasks on one node, with RESEARCH_DISTRIBUTED=1 (as the array script
  exports it): maybe_initialize_distributed() joins both processes into one 4-device system."""
  worker = tmp_path / "worker.py"
  worker.write_text(textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {ROOT!r})
      import jax, numpy as np
      from jax.sharding import NamedSharding, PartitionSpec as P
      from research.core import parallel
      parallel.maybe_initialize_distributed()
      mesh = parallel.make_mesh()
      local = np.full((2,), jax.process_index() + 1.0, np.float32)
      x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)
      total = jax.jit(lambda a: a.sum(), out_shardings=NamedSharding(mesh, P()))(x)
      print("RESULT", jax.process_index(), jax.process_count(), jax.device_count(), float(total))
      """))
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  procs = []
  for i in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", RESEARCH_DISTRIBUTED="1",
               JAX_COORDINATOR_PORT=str(port), SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost",
               SLURM_NTASKS="2", SLURM_PROCID=str(i), SLURM_LOCALID=str(i), SLURM_STEP_NUM_NODES="1")
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    procs.append(subprocess.Popen([sys.executable, str(worker)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  outs = [p.communicate(timeout=120) for p in procs]
  for p, (stdout, stderr) in zip(procs, outs):
    assert p.returncode == 0, stderr[-3000:]
  assert "RESULT 0 2 4 6.0" in outs[0][0] and "RESULT 1 2 4 6.0" in outs[1][0]


# ----------------------------------------------------------------------------------------------
# Optuna.

def test_optuna_search_sqlite_resumes(tmp_path, fake_train):
  optuna = pytest.importorskip("optuna")
  exp = _experiment(sweep=[random_axis("optimizer.learning_rate", loguniform(1e-3, 2.0)),
                           grid("batch_size", [16, 32])], seeds=(0, 1), sample_seed=3)
  sweep = SweepDir(str(tmp_path / "sweep"))
  runner = LocalRunner(sweep, exp.config_path, train_script=fake_train, log=lambda line: None)
  study = optuna_search(exp, sweep, runner, n_trials=6, sampler="random")
  storage = f"sqlite:///{sweep.path}/optuna.db"
  assert os.path.exists(os.path.join(sweep.path, "optuna.db"))
  complete = optuna.trial.TrialState.COMPLETE
  assert len(study.get_trials(states=(complete,))) == 6
  # A new driver (another process or machine) continues the stored study.
  study = optuna_search(exp, sweep, runner, n_trials=6, storage=storage, sampler="random")
  assert len(study.get_trials(states=(complete,))) == 6
  study = optuna_search(exp, sweep, runner, n_trials=9, storage=storage, sampler="tpe")
  loaded = optuna.load_study(study_name="demo", storage=storage)
  assert len(loaded.get_trials(states=(complete,))) == 9
  best = loaded.best_trial
  assert 1e-3 <= best.params["optimizer.learning_rate"] <= 2.0 and best.params["batch_size"] in (16, 32)
  # Each Optuna trial trained both seeds; its value is their mean; no training run twice.
  names = best.user_attrs["trials"]
  assert len(names) == 2 and all(n.endswith(tuple("0123456789abcdef")) for n in names)
  values = [json.load(open(os.path.join(sweep.path, "trials", n, "results.json")))["eval/accuracy"]
            for n in names]
  assert best.value == pytest.approx(sum(values) / 2)
  assert all(n == 1 for n in _starts(sweep).values())
  failed = loaded.get_trials(states=(optuna.trial.TrialState.FAIL,))
  assert all(t.params["optimizer.learning_rate"] >= 1.0 for t in failed)
  assert len(sweep.trials()) >= 2 * 9


def test_sweep_cli_dry_run_and_slurm(tmp_path):
  base = [sys.executable, "-m", "research.cli.sweep",
          os.path.join(ROOT, "experiments", "lenet5_digits_lr_seed.py"), f"--sweep_dir={tmp_path}"]
  out = subprocess.run(base + ["--dry_run", "--set=num_train_steps=7"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.count("pending  learning_rate=") == 4 and "--config.num_train_steps=7" in out.stdout
  out = subprocess.run(base + ["--launcher=slurm", "--slurm=partition=debug", "--slurm=time_min=30"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  path = shlex.split(out.stdout.strip().splitlines()[-1])[-1]
  text = open(path).read()
  assert "#SBATCH --array=0-3\n" in text and "#SBATCH --partition=debug" in text
  assert "#SBATCH --time=00:30:00" in text and "RESEARCH_DISTRIBUTED" not in text
  out = subprocess.run(base + ["--dry_run", "--set=optimizer.lr=1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "no field 'optimizer.lr'" in out.stderr
