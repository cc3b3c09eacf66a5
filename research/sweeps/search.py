"""Random and Bayesian search with Optuna over an experiment's sweep axes.

Random axes become Optuna float / int / categorical distributions, grid and zipped axes become
categorical choices. Each Optuna trial trains one sweep trial per seed of the experiment (the
same trial ids and workdirs as the grid path, so a configuration Optuna suggests twice is trained
once) and reports the mean of the experiment's metric.

The study lives in a database: SQLite in the sweep directory by default, or a server URL
(postgresql://..., mysql://...) that several machines running the same command share. Trials
send heartbeats; the trials of a driver that was killed go stale and are retried.
"""
from __future__ import annotations

import os
import statistics
import warnings
from typing import Any, Dict, Mapping, Optional, Protocol

from research.sweeps.experiment import Experiment, RandomAxis, Trial, Uniform, IntUniform
from research.sweeps.local import SweepDir, TrialResult

HEARTBEAT_S = 60


class TrialFailed(RuntimeError):
  """A training run of an Optuna trial failed or stopped; Optuna records the trial as FAIL."""


class Runner(Protocol):
  def run_one(self, trial: Trial) -> TrialResult: ...


def default_storage(sweep: SweepDir) -> str:
  return f"sqlite:///{sweep.path}/optuna.db"


def _primitive(values: Any) -> bool:
  return all(v is None or isinstance(v, (bool, int, float, str)) for v in values)


def suggest(optuna_trial: Any, experiment: Experiment) -> Dict[str, Any]:
  """The swept values (seed excluded) Optuna suggests for one trial."""
  swept: Dict[str, Any] = {}
  for axis in experiment.sweep:
    if isinstance(axis, RandomAxis):
      dist = axis.distribution
      if isinstance(dist, Uniform):
        swept[axis.field] = optuna_trial.suggest_float(axis.field, dist.low, dist.high, log=dist.log)
      elif isinstance(dist, IntUniform):
        swept[axis.field] = optuna_trial.suggest_int(axis.field, dist.low, dist.high)
      elif _primitive(dist.values):
        swept[axis.field] = optuna_trial.suggest_categorical(axis.field, list(dist.values))
      else:
        index = optuna_trial.suggest_categorical(axis.field, list(range(len(dist.values))))
        swept[axis.field] = dist.values[index]
    elif len(axis.fields) == 1 and _primitive(row[0] for row in axis.rows):
      swept[axis.fields[0]] = optuna_trial.suggest_categorical(
          axis.fields[0], [row[0] for row in axis.rows])
    else:
      index = optuna_trial.suggest_categorical("|".join(axis.fields), list(range(len(axis.rows))))
      swept.update(zip(axis.fields, axis.rows[index]))
  return swept


def optuna_search(experiment: Experiment, sweep: SweepDir, runner: Runner, n_trials: int,
                  storage: Optional[str] = None, sampler: str = "tpe", parallel: int = 1,
                  extra: Optional[Mapping[str, Any]] = None):
  """Runs the study `experiment.name` until it holds `n_trials` complete trials; returns it.

  Starting it again continues the same study (the count includes earlier runs' trials).
  `sampler`: 'tpe' (Bayesian, Optuna's default) or 'random'. `parallel` trials run at once.
  """
  import optuna
  from optuna.exceptions import ExperimentalWarning
  from optuna.trial import TrialState
  os.makedirs(sweep.path, exist_ok=True)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ExperimentalWarning)
    rdb = optuna.storages.RDBStorage(
        storage or default_storage(sweep), heartbeat_interval=HEARTBEAT_S,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
  study = optuna.create_study(storage=rdb, study_name=experiment.name, load_if_exists=True,
                              direction="maximize" if experiment.direction == "max" else "minimize")
  # Seeded for a reproducible first run; offset by the trials so far so that a restarted driver
  # does not replay the first run's random suggestions.
  seed = experiment.sample_seed + len(study.trials)
  samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
  if sampler not in samplers:
    raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(samplers)}")
  study.sampler = samplers[sampler](seed=seed)

  def objective(optuna_trial) -> float:
    swept = suggest(optuna_trial, experiment)
    trials = [experiment.make_trial({**swept, "seed": s}, extra) for s in experiment.seeds] or [
        experiment.make_trial(swept, extra)]
    sweep.register(experiment, trials)
    optuna_trial.set_user_attr("trials", [t.name for t in trials])
    values = []
    for trial in trials:
      result = runner.run_one(trial)
      if result.status not in ("done", "skipped"):
        raise TrialFailed(f"{trial.name} {result.status}")
      if experiment.metric not in result.metrics:
        raise TrialFailed(f"{trial.name} did not report {experiment.metric}; it reported "
                          f"{', '.join(sorted(result.metrics))}")
      values.append(float(result.metrics[experiment.metric]))
    return statistics.fmean(values)

  remaining = n_trials - len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
  if remaining > 0:
    study.optimize(objective, n_trials=remaining, n_jobs=parallel, catch=(TrialFailed,),
                   callbacks=[optuna.study.MaxTrialsCallback(n_trials)])
  return study
