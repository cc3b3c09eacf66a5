"""Experiments: a base config file, overrides, a sweep over config fields, expected numbers.

An experiment file (experiments/X.py) defines `get_experiment() -> Experiment`:

    from research.sweeps import Experiment, grid

    def get_experiment():
      return Experiment(
          name="lenet5_digits_lr_seed",
          config="configs/lenet5_digits.py",          # relative to the repository root
          overrides={"num_train_steps": 150},         # applied to every trial
          sweep=[grid("optimizer.learning_rate", [0.01, 0.1])],
          seeds=(0, 1))

Sweep axes, over any dotted config field:
  * `grid(field, values)`: one value per trial; several grid axes form their cartesian product;
  * `zipped({field: values, ...})`: several fields that change together (one row per trial);
  * `random_axis(field, dist)`: drawn `num_samples` times (reproducibly, from `sample_seed`) with
    `uniform`, `loguniform`, `randint` or `choice`; Optuna (research-sweep --launcher=optuna)
    searches the same distributions instead.
`seeds` adds a grid axis over `config.seed` (innermost, so a configuration's seeds are adjacent).

A trial is a dict of overrides (the experiment's own, the swept values, and any the sweep command
adds). Its id is a hash of that dict, so it does not depend on the trial's position in the sweep
and a trial keeps its workdir when axes are added or reordered.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import random
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ml_collections import ConfigDict

from research.core.config import ConfigError, load_config_file, load_python_file

Value = Any


class ExperimentError(ValueError):
  """A problem with an experiment definition; the message names the experiment and the field."""


# ----------------------------------------------------------------------------------------------
# Distributions for random axes.

@dataclasses.dataclass(frozen=True)
class Uniform:
  """A float in [low, high], uniform (or uniform in log space with `log=True`)."""

  low: float
  high: float
  log: bool = False

  def sample(self, rng: random.Random) -> float:
    if self.log:
      return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
    return rng.uniform(self.low, self.high)


@dataclasses.dataclass(frozen=True)
class IntUniform:
  """An integer in [low, high] (both included)."""

  low: int
  high: int

  def sample(self, rng: random.Random) -> int:
    return rng.randint(self.low, self.high)


@dataclasses.dataclass(frozen=True)
class Choice:
  """One of `values`, each equally likely."""

  values: Tuple[Value, ...]

  def sample(self, rng: random.Random) -> Value:
    return self.values[rng.randrange(len(self.values))]


Distribution = Union[Uniform, IntUniform, Choice]


def uniform(low: float, high: float) -> Uniform:
  return Uniform(float(low), float(high))


def loguniform(low: float, high: float) -> Uniform:
  if low <= 0:
    raise ExperimentError(f"loguniform needs low > 0, got {low}")
  return Uniform(float(low), float(high), log=True)


def randint(low: int, high: int) -> IntUniform:
  return IntUniform(int(low), int(high))


def choice(values: Sequence[Value]) -> Choice:
  return Choice(tuple(canonical(v) for v in values))


# ----------------------------------------------------------------------------------------------
# Sweep axes.

@dataclasses.dataclass(frozen=True)
class RowAxis:
  """Fields that take the values of one row per trial (a grid axis has one field)."""

  fields: Tuple[str, ...]
  rows: Tuple[Tuple[Value, ...], ...]


@dataclasses.dataclass(frozen=True)
class RandomAxis:
  """A field drawn from a distribution."""

  field: str
  distribution: Distribution


Axis = Union[RowAxis, RandomAxis]


def grid(field: str, values: Sequence[Value]) -> RowAxis:
  """`field` takes each of `values` (crossed with every other grid axis)."""
  if not values:
    raise ExperimentError(f"grid axis {field!r} has no values")
  return RowAxis((field,), tuple((canonical(v),) for v in values))


def zipped(columns: Mapping[str, Sequence[Value]]) -> RowAxis:
  """Fields that change together: trial i uses the i-th value of every field."""
  lengths = {field: len(values) for field, values in columns.items()}
  if len(set(lengths.values())) != 1 or 0 in lengths.values():
    raise ExperimentError(f"zipped axis needs value lists of one non-zero length, got {lengths}")
  rows = zip(*[[canonical(v) for v in values] for values in columns.values()])
  return RowAxis(tuple(columns), tuple(rows))


def random_axis(field: str, distribution: Distribution) -> RandomAxis:
  """`field` is drawn from `distribution` (Experiment.num_samples draws, or by Optuna)."""
  return RandomAxis(field, distribution)


# ----------------------------------------------------------------------------------------------
# Experiments and trials.

@dataclasses.dataclass(frozen=True)
class Baseline:
  """A published number to reproduce: `metric` (as the run logs it) should reach `expected`."""

  metric: str
  expected: float
  tolerance: float
  source: str
  note: str = ""  # The number as the source states it, when it is not `metric` (e.g. an error rate).


@dataclasses.dataclass(frozen=True)
class SlurmResources:
  """What one trial asks of SLURM. GPU jobs run one process per GPU (JAX's SLURM default)."""

  nodes: int = 1
  gpus_per_node: int = 1
  cpus_per_task: int = 8
  time_min: int = 24 * 60
  mem_gb: int = 0          # 0: the partition's default.
  partition: str = ""
  account: str = ""
  qos: str = ""
  constraint: str = ""


@dataclasses.dataclass(frozen=True)
class Trial:
  """One training run of a sweep: the overrides it applies to the base config."""

  overrides: Mapping[str, Value]  # All overrides (experiment, swept, command line), dotted keys.
  swept: Mapping[str, Value]      # The values of the sweep axes (seed included).

  @property
  def id(self) -> str:
    return trial_id(self.overrides)

  @property
  def name(self) -> str:
    """A readable, unique directory name: the swept values, then the id."""
    label = "_".join(f"{key}={format_value(value)}" for key, value in _short_keys(self.swept).items())
    label = re.sub(r"[^A-Za-z0-9._=+-]", "_", label)[:80]
    return f"{label}-{self.id[:8]}" if label else self.id


def trial_id(overrides: Mapping[str, Value]) -> str:
  """A stable id of an override dict: the same dict gives the same id, in any key order."""
  text = json.dumps({k: canonical(v) for k, v in overrides.items()}, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def format_value(value: Value) -> str:
  """A short text form of a config value (names, tables, command lines)."""
  if isinstance(value, float):
    return f"{value:.4g}"
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def metric_goal(metric: str) -> str:
  """'min' for losses, errors and distances to data (FID), else 'max'."""
  return "min" if re.search(r"loss|error|fid|perplexity", metric) else "max"


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A base config, overrides, a sweep, and what the runs should reach."""

  name: str
  config: str                                   # Config: a path (relative to the experiment file, then
                                                # the current folder) or a shipped config's name.
  overrides: Mapping[str, Value] = dataclasses.field(default_factory=dict)
  sweep: Sequence[Axis] = ()
  seeds: Sequence[int] = ()
  num_samples: int = 1                          # Draws of the random axes.
  sample_seed: int = 0
  metric: str = "eval/accuracy"                 # What "best" means, and what Optuna optimizes.
  goal: str = ""                                # 'max' or 'min'; '' infers it from `metric`.
  baseline: Optional[Baseline] = None
  slurm: SlurmResources = SlurmResources()
  description: str = ""
  source: str = ""                              # The experiment file (set by load_experiment).

  @property
  def config_path(self) -> str:
    """The config file's absolute path (raises ConfigError naming the config if there is none)."""
    from research.cli.shipped import resolve
    return resolve(self.config, "configs", [os.path.dirname(self.source)] if self.source else [])

  @property
  def direction(self) -> str:
    return self.goal or metric_goal(self.metric)

  @property
  def row_axes(self) -> List[RowAxis]:
    axes = [a for a in self.sweep if isinstance(a, RowAxis)]
    return axes + ([grid("seed", list(self.seeds))] if self.seeds else [])

  @property
  def random_axes(self) -> List[RandomAxis]:
    return [a for a in self.sweep if isinstance(a, RandomAxis)]

  def swept_fields(self) -> List[str]:
    """The swept fields in the order the axes are declared, seed last."""
    fields = [f for a in self.sweep for f in (a.fields if isinstance(a, RowAxis) else (a.field,))]
    fields += ["seed"] if self.seeds else []
    duplicates = sorted({f for f in fields if fields.count(f) > 1})
    if duplicates:
      raise ExperimentError(f"experiment {self.name}: fields swept twice: {', '.join(duplicates)}")
    return fields

  def make_trial(self, swept: Mapping[str, Value],
                 extra: Optional[Mapping[str, Value]] = None) -> Trial:
    """The trial with the experiment's overrides, then `swept`, then `extra` (command line)."""
    overrides = {**self.overrides, **swept, **(extra or {})}
    return Trial({k: canonical(v) for k, v in overrides.items()},
                 {k: canonical(v) for k, v in swept.items()})

  def expand(self, extra: Optional[Mapping[str, Value]] = None) -> List[Trial]:
    """Every trial: random draws (outermost) x the product of the row axes (seeds innermost)."""
    self.swept_fields()
    samples: List[Dict[str, Value]] = [{}]
    if self.random_axes:
      if self.num_samples < 1:
        raise ExperimentError(f"experiment {self.name} has random axes: set num_samples >= 1")
      rng = random.Random(self.sample_seed)
      samples = [{a.field: a.distribution.sample(rng) for a in self.random_axes}
                 for _ in range(self.num_samples)]
    trials = []
    for sample in samples:
      for rows in itertools.product(*(axis.rows for axis in self.row_axes)):
        values = dict(sample)
        for axis, row in zip(self.row_axes, rows):
          values.update(zip(axis.fields, row))
        trials.append(self.make_trial({f: values[f] for f in self.swept_fields()}, extra))
    ids = [t.id for t in trials]
    if len(set(ids)) != len(ids):
      raise ExperimentError(f"experiment {self.name}: some trials have identical overrides")
    return trials

  def base_config(self) -> ConfigDict:
    """The config file's get_config()."""
    return load_config_file(self.config_path)

  def build_config(self, trial: Trial) -> ConfigDict:
    """The config a trial trains with; ExperimentError names a field the config lacks."""
    config = self.base_config()
    for key, value in trial.overrides.items():
      set_field(config, key, value, where=f"experiment {self.name}")
    return config


def set_field(config: ConfigDict, key: str, value: Value, where: str = "") -> None:
  """config.<dotted key> = value; the field must exist and accept the value's type."""
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts):
    if not isinstance(node, ConfigDict) or part not in node:
      close = difflib.get_close_matches(part, list(node.keys()), n=1) if isinstance(node, ConfigDict) else []
      hint = f" (did you mean {'.'.join(parts[:i] + close[:1])!r}?)" if close else ""
      raise ExperimentError(f"{where}: config has no field {key!r}{hint}")
    if i < len(parts) - 1:
      node = node[part]
  try:
    node[parts[-1]] = value
  except TypeError as e:
    raise ExperimentError(f"{where}: cannot set {key!r} to {value!r}: {e}") from e


def load_experiment(path: str) -> Experiment:
  """Runs the get_experiment() of an experiment file (a path, or a shipped experiment's name);
  fails clearly if it or its config file is missing."""
  from research.cli.shipped import resolve
  try:
    path = resolve(path, "experiments")
  except ConfigError as e:
    raise ExperimentError(str(e)) from None
  module = load_python_file(path, "experiment")
  if not hasattr(module, "get_experiment"):
    raise ExperimentError(f"{path} defines no get_experiment()")
  experiment = dataclasses.replace(module.get_experiment(), source=os.path.abspath(path))
  try:
    experiment.config_path
  except ConfigError as e:
    raise ExperimentError(f"experiment {experiment.name} ({path}): {e}") from None
  return experiment


def canonical(value: Value) -> Value:
  """Lists become tuples (config fields hold tuples); numpy scalars become Python numbers."""
  if isinstance(value, Mapping):
    return {k: canonical(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(canonical(v) for v in value)
  if hasattr(value, "item") and not isinstance(value, (str, bytes)):
    return value.item()
  return value


def _short_keys(swept: Mapping[str, Value]) -> Dict[str, Value]:
  """Keys shortened to their last component where that stays unique."""
  last = [k.rsplit(".", 1)[-1] for k in swept]
  return {(s if last.count(s) == 1 else k): v for k, s, v in zip(swept, last, swept.values())}
