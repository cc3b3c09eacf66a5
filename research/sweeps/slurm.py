"""SLURM: a sweep as one job array, through a generated sbatch script or through submitit.

Array task i runs trial i of the sweep with `srun research-train ...` in the trial's workdir
(shared filesystem assumed). A trial whose workdir holds results.json exits at once, and an
interrupted one resumes from its checkpoint, so resubmitting the script is always safe.

Multi-host training of one trial: GPU jobs start one process per GPU
(--ntasks-per-node = --gpus-per-node), JAX's SLURM convention. With more than one process the
script exports RESEARCH_DISTRIBUTED=1, so research-train calls `jax.distributed.initialize()`,
which reads the coordinator (first node of SLURM_STEP_NODELIST), the process count and id and
the local GPU (SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID) from the environment srun sets.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

from research.sweeps.experiment import Experiment, SlurmResources, Trial
from research.sweeps.local import TRAIN_MODULE, SweepDir, command_value, train_command



def tasks_per_node(resources: SlurmResources) -> int:
  """One process per GPU (one per node without GPUs)."""
  return max(1, resources.gpus_per_node)


def is_distributed(resources: SlurmResources) -> bool:
  return resources.nodes * tasks_per_node(resources) > 1


def array_spec(indices: Sequence[int], max_parallel: int = 0) -> str:
  """sbatch --array syntax for `indices`: ranges where consecutive ('0-3,7,9-10'), '%N' throttle."""
  if not indices:
    raise ValueError("an array job needs at least one index")
  ranges: List[List[int]] = []
  for i in sorted(set(indices)):
    if ranges and i == ranges[-1][1] + 1:
      ranges[-1][1] = i
    else:
      ranges.append([i, i])
  text = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
  return text + (f"%{max_parallel}" if max_parallel > 0 else "")


def sbatch_directives(experiment: Experiment, sweep: SweepDir, indices: Sequence[int],
                      resources: SlurmResources, max_parallel: int = 0) -> List[str]:
  """The #SBATCH options (without the prefix), in sbatch's long-option syntax."""
  hours, minutes = divmod(resources.time_min, 60)
  options = [
      f"--job-name={experiment.name}",
      f"--array={array_spec(indices, max_parallel)}",
      f"--nodes={resources.nodes}",
      f"--ntasks-per-node={tasks_per_node(resources)}",
      f"--cpus-per-task={resources.cpus_per_task}",
      f"--time={hours:02d}:{minutes:02d}:00",
      f"--output={os.path.join(sweep.path, 'slurm', '%x_%A_%a.out')}",
      "--open-mode=append",
      "--signal=TERM@120",  # train.py checkpoints on SIGTERM, 2 minutes before the time limit.
      "--requeue",
  ]
  if resources.gpus_per_node:
    options.append(f"--gpus-per-node={resources.gpus_per_node}")
  if resources.mem_gb:
    options.append(f"--mem={resources.mem_gb}G")
  for key in ("partition", "account", "qos", "constraint"):
    if getattr(resources, key):
      options.append(f"--{key}={getattr(resources, key)}")
  return options


def sbatch_script(experiment: Experiment, sweep: SweepDir, trials: Sequence[Trial],
                  indices: Sequence[int], resources: SlurmResources, max_parallel: int = 0,
                  python: str = sys.executable) -> str:
  """A bash job-array script: task i trains trials[i]; `indices` are the tasks to submit."""
  lines = ["#!/bin/bash"] + [f"#SBATCH {option}" for option in sbatch_directives(
      experiment, sweep, indices, resources, max_parallel)]
  lines += [
      "#",
      f"# Experiment {experiment.name}: {len(trials)} trials of {experiment.config}, one array task",
      "# each. Written by research-sweep --launcher=slurm; submit with: sbatch THIS_FILE",
      "set -euo pipefail",
      'case "${SLURM_ARRAY_TASK_ID}" in',
  ]
  for i, trial in enumerate(trials):
    args = " ".join(shlex.quote(f"--config.{k}={command_value(v)}") for k, v in trial.overrides.items())
    lines += [f"  {i})  # {trial.name}",
              f"    WORKDIR={shlex.quote(sweep.workdir(trial))}",
              f"    ARGS=({args}) ;;"]
  lines += [
      '  *) echo "no trial with array index ${SLURM_ARRAY_TASK_ID}" >&2; exit 1 ;;',
      "esac",
      'if [[ -f "${WORKDIR}/results.json" ]]; then',
      '  echo "trial finished before: ${WORKDIR}"',
      "  exit 0",
      "fi",
      'mkdir -p "${WORKDIR}"',
  ]
  if is_distributed(resources):
    lines.append("export RESEARCH_DISTRIBUTED=1  # jax.distributed.initialize() from SLURM_*")
  lines.append(f"srun --kill-on-bad-exit=1 {shlex.quote(python)} -m {TRAIN_MODULE} "
               f"--config={shlex.quote(experiment.config_path)} --workdir=\"${{WORKDIR}}\" "
               '"${ARGS[@]}" 2>&1 | tee -a "${WORKDIR}/train.log"')
  return "\n".join(lines) + "\n"


def write_sbatch(experiment: Experiment, sweep: SweepDir, trials: Sequence[Trial],
                 resources: SlurmResources, max_parallel: int = 0) -> Optional[str]:
  """Writes SWEEP/slurm/<name>.sbatch for the unfinished trials; None when all are finished."""
  pending = [i for i, t in enumerate(trials) if sweep.status(t) != "done"]
  if not pending:
    return None
  path = os.path.join(sweep.path, "slurm", f"{experiment.name}.sbatch")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(sbatch_script(experiment, sweep, trials, pending, resources, max_parallel))
  os.chmod(path, 0o755)
  return path


def run_trial_command(command: Sequence[str], env: Mapping[str, str], log_path: str) -> int:
  """Runs one trial's train.py command (a submitit job's function), appending to its log."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "ab") as log:
    subprocess.run(list(command), stdout=log, stderr=subprocess.STDOUT, check=True,
                   env={**os.environ, **env})
  return 0


def submit_with_submitit(experiment: Experiment, sweep: SweepDir, trials: Sequence[Trial],
                         resources: SlurmResources, max_parallel: int = 0,
                         cluster: Optional[str] = None,
                         train_script: Optional[str] = None) -> List[Any]:
  """Submits the unfinished trials as one submitit job array; returns the submitit jobs.

  `cluster` is submitit's: None picks SLURM when available; 'debug' runs the jobs in this process.
  """
  try:
    import submitit
  except ImportError as e:
    raise ImportError("--submit needs submitit (pip install submitit); or run sbatch on the "
                      "script that --launcher=slurm writes") from e
  pending = [t for t in trials if sweep.status(t) != "done"]
  if not pending:
    return []
  executor = submitit.AutoExecutor(folder=os.path.join(sweep.path, "slurm", "submitit", "%j"),
                                   cluster=cluster)
  params: Dict[str, Any] = dict(
      name=experiment.name, nodes=resources.nodes, tasks_per_node=tasks_per_node(resources),
      gpus_per_node=resources.gpus_per_node, cpus_per_task=resources.cpus_per_task,
      timeout_min=resources.time_min, slurm_array_parallelism=max_parallel or len(pending))
  if resources.mem_gb:
    params["mem_gb"] = resources.mem_gb
  for key in ("partition", "account", "qos", "constraint"):
    if getattr(resources, key):
      params[f"slurm_{key}"] = getattr(resources, key)
  executor.update_parameters(**params)
  env = {"RESEARCH_DISTRIBUTED": "1"} if is_distributed(resources) else {}
  commands = [train_command(experiment.config_path, sweep.workdir(t), t.overrides, script=train_script)
              for t in pending]
  logs = [os.path.join(sweep.workdir(t), "train.log") for t in pending]
  return executor.map_array(run_trial_command, commands, [env] * len(pending), logs)
