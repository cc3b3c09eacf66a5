"""Run an experiment's sweep:  research-sweep experiments/X.py [--parallel=2]

Launchers (--launcher):
  local   (default) every trial is its own research-train process with its own workdir under
          --sweep_dir (default runs/sweeps/<experiment name>), --parallel at a time
          (--gpus_per_trial=K gives each running trial K GPUs of its own). Finished trials are
          skipped, so running the command again resumes a killed sweep; a failed trial is reported
          with the end of its log and the others go on.
  slurm   writes SWEEP_DIR/slurm/<experiment>.sbatch, a job array over the unfinished trials
          (--parallel throttles it; --slurm=KEY=VALUE sets resources, e.g. --slurm=partition=gpu
          --slurm=nodes=2); --submit submits the same array through submitit instead.
  optuna  random (--sampler=random) or Bayesian (--sampler=tpe) search over the sweep axes until
          the study holds --n_trials complete trials; the study lives in --storage (default
          SQLite in the sweep directory; a database URL lets several machines share it).

--set=KEY=VALUE adds an override to every trial (e.g. --set=num_train_steps=100); --seeds=0,1
replaces the experiment's seeds; --dry_run lists
the trials, their status and their commands. Then: research-report experiments/X.py
"""
from __future__ import annotations

import ast
import dataclasses
import os
import sys
import time
from typing import Any, Dict, List


from absl import app, flags

from research.cli.app import run_app
from research.sweeps import experiment as experiment_lib
from research.sweeps import local, slurm

_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm", "optuna"], "Where trials run.")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Sweep directory (default runs/sweeps/<name>).")
_PARALLEL = flags.DEFINE_integer("parallel", 0, "Trials at a time (0: one locally and in Optuna, "
                                 "no limit on SLURM).")
_SET = flags.DEFINE_multi_string("set", [], "KEY=VALUE override added to every trial.")
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds replacing the experiment's (e.g. --seeds=0 for a quick "
                           "check of every configuration with one seed).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the trials and their commands; run nothing.")
_GPUS_PER_TRIAL = flags.DEFINE_integer("gpus_per_trial", 0, "local: GPUs of each running trial.")
_SLURM = flags.DEFINE_multi_string("slurm", [], "slurm: KEY=VALUE resource (SlurmResources field).")
_SUBMIT = flags.DEFINE_bool("submit", False, "slurm: submit through submitit.")
_N_TRIALS = flags.DEFINE_integer("n_trials", 0, "optuna: complete trials (default num_samples).")
_STORAGE = flags.DEFINE_string("storage", "", "optuna: study storage URL (default SQLite).")
_SAMPLER = flags.DEFINE_enum("sampler", "tpe", ["tpe", "random"], "optuna: sampler.")


def parse_value(text: str) -> Any:
  """A Python literal ('0.1', '(1, 2)', 'True'), else the text itself ('sgd', '/data')."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_assignments(items: List[str], flag: str) -> Dict[str, Any]:
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise app.UsageError(f"--{flag} takes KEY=VALUE, got {item!r}")
    out[key] = parse_value(value)
  return out


def slurm_resources(experiment: experiment_lib.Experiment) -> experiment_lib.SlurmResources:
  fields = [f.name for f in dataclasses.fields(experiment_lib.SlurmResources)]
  changes = parse_assignments(_SLURM.value, "slurm")
  unknown = sorted(set(changes) - set(fields))
  if unknown:
    raise app.UsageError(f"unknown --slurm keys {unknown}; known: {', '.join(fields)}")
  defaults = experiment.slurm
  return dataclasses.replace(defaults, **{k: type(getattr(defaults, k))(v) for k, v in changes.items()})


def main(argv: List[str]) -> int:
  if len(argv) != 2:
    raise app.UsageError("usage: sweep.py EXPERIMENT_FILE [flags]")
  experiment = experiment_lib.load_experiment(argv[1])
  if _SEEDS.value is not None:
    try:
      experiment = dataclasses.replace(experiment, seeds=tuple(int(s) for s in _SEEDS.value))
    except ValueError:
      raise app.UsageError(f"--seeds takes integers separated by commas, got {','.join(_SEEDS.value)}") from None
  extra = parse_assignments(_SET.value, "set")
  sweep = local.SweepDir(_SWEEP_DIR.value or os.path.join("runs", "sweeps", experiment.name))
  groups = local.gpu_groups(_GPUS_PER_TRIAL.value) if _GPUS_PER_TRIAL.value else None
  parallel = max(1, _PARALLEL.value)
  runner = local.LocalRunner(sweep, experiment.config_path, parallel, groups,
                             log=lambda line: print(line, flush=True))
  start = time.perf_counter()
  if _LAUNCHER.value == "optuna":
    from research.sweeps.search import optuna_search
    if _DRY_RUN.value:
      raise app.UsageError("--dry_run lists grid trials; Optuna chooses its trials as it goes")
    study = optuna_search(experiment, sweep, runner, _N_TRIALS.value or experiment.num_samples,
                          _STORAGE.value or None, _SAMPLER.value, parallel, extra)
    if any(t.value is not None for t in study.trials):
      print(f"best of {len(study.trials)} Optuna trials: {experiment.metric} "
            f"{study.best_value:.4f} with {study.best_params}")
  else:
    trials = experiment.expand(extra)
    for trial in trials:  # A misspelled field fails here, before anything runs.
      experiment.build_config(trial)
    sweep.register(experiment, trials)
    print(f"experiment {experiment.name}: {len(trials)} trials in {sweep.path}", flush=True)
    if _DRY_RUN.value:
      for trial in trials:
        command = local.train_command(experiment.config_path, sweep.workdir(trial), trial.overrides)
        print(f"{sweep.status(trial):8s} {trial.name}\n         {' '.join(command)}")
      return 0
    if _LAUNCHER.value == "slurm":
      resources = slurm_resources(experiment)
      if _SUBMIT.value:
        jobs = slurm.submit_with_submitit(experiment, sweep, trials, resources, _PARALLEL.value)
        print(f"submitted {len(jobs)} jobs: {', '.join(str(j.job_id) for j in jobs)}")
      else:
        path = slurm.write_sbatch(experiment, sweep, trials, resources, _PARALLEL.value)
        print(f"submit with: sbatch {path}" if path else "every trial is finished")
      return 0
    results = runner.run_all(trials)
    print(local.summarize(results, time.perf_counter() - start))
    if any(r.status == "failed" for r in results):
      return 1
  print(f"report: {sys.executable} research-report {argv[1]} --sweep_dir={sweep.path}")
  return 0


def run() -> None:
  """Console entry point."""
  run_app(main)


if __name__ == "__main__":
  run()
