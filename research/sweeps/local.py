"""A sweep directory, and running its trials on this machine as `research-train` processes.

Layout of a sweep directory:
  sweep.json      the experiment and every trial registered so far (id, name, overrides)
  events.jsonl    one JSON line per trial start / done / failed / stopped, with times
  trials/<name>/  each trial's workdir: train.py's outputs plus train.log (its stdout and stderr)

A trial is finished when its workdir holds results.json; starting the sweep again skips it. A
trial that was interrupted resumes from its latest checkpoint (train.py's own resume). A trial
whose workdir is held by a live run (e.g. still running after the sweep process was killed) is
never started a second time.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from research.core import workdir as workdir_lib
from research.core.errors import EXIT_PREEMPTED, MissingRunError
from research.sweeps.experiment import Experiment, Trial, canonical, format_value
from research.sweeps.tensorboard import write_hparams

# Trials run the installed training module (never a path into a source tree).
TRAIN_MODULE = "research.cli.train"
LOG_TAIL_LINES = 40


def command_value(value: Any) -> str:
  """A config value as `--config.key=VALUE` text that ml_collections' config flags parse back."""
  if isinstance(value, tuple):
    return repr(value)
  return repr(value) if isinstance(value, float) else str(value)


def train_command(config_path: str, workdir: str, overrides: Mapping[str, Any],
                  python: str = sys.executable, script: Optional[str] = None) -> List[str]:
  """The command line of one trial: `python -m research.cli.train ...` (or `python SCRIPT ...`)."""
  program = [script] if script else ["-m", TRAIN_MODULE]
  return [python, *program, f"--config={config_path}", f"--workdir={workdir}"] + [
      f"--config.{key}={command_value(value)}" for key, value in overrides.items()]


def read_results(workdir: str) -> Optional[Dict[str, Any]]:
  """WORKDIR/results.json (a finished run's final metrics), or None."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


class SweepDir:
  """The directory of one sweep: its manifest, its event log and the trials' workdirs."""

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self.manifest_path = os.path.join(self.path, "sweep.json")
    self.events_path = os.path.join(self.path, "events.jsonl")
    self._lock = threading.Lock()

  def read_manifest(self) -> Dict[str, Any]:
    if not os.path.exists(self.manifest_path):
      raise MissingRunError(f"{self.path} holds no sweep (no sweep.json): run research-sweep first")
    with open(self.manifest_path) as f:
      return json.load(f)

  def register(self, experiment: Experiment, trials: Sequence[Trial]) -> None:
    """Adds `trials` to sweep.json (trials registered before stay: their results are kept)."""
    with self._lock:
      os.makedirs(self.path, exist_ok=True)
      manifest = self.read_manifest() if os.path.exists(self.manifest_path) else {"trials": []}
      manifest.update(experiment=experiment.name, config=experiment.config_path,
                      metric=experiment.metric, goal=experiment.direction)
      known = {t["id"] for t in manifest["trials"]}
      for trial in trials:
        if trial.id not in known:
          known.add(trial.id)
          manifest["trials"].append({
              "id": trial.id, "name": trial.name, "workdir": os.path.join("trials", trial.name),
              "overrides": dict(trial.overrides), "swept": dict(trial.swept)})
      tmp = self.manifest_path + ".tmp"
      with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
      os.replace(tmp, self.manifest_path)

  def trials(self) -> List[Trial]:
    """Every trial in sweep.json, in registration order."""
    return [Trial(canonical(t["overrides"]), canonical(t["swept"]))
            for t in self.read_manifest()["trials"]]

  def workdir(self, trial: Trial) -> str:
    return os.path.join(self.path, "trials", trial.name)

  def log_event(self, event: str, trial: Trial, **info: Any) -> None:
    record = {"time": round(time.time(), 3), "event": event, "trial": trial.id, "name": trial.name}
    record.update(info)
    with self._lock, open(self.events_path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def events(self) -> List[Dict[str, Any]]:
    if not os.path.exists(self.events_path):
      return []
    with open(self.events_path) as f:
      return [json.loads(line) for line in f if line.strip().endswith("}")]

  def status(self, trial: Trial) -> str:
    """'done' (results.json), else the last event: 'failed', 'stopped', 'started'; or 'pending'."""
    if os.path.exists(os.path.join(self.workdir(trial), "results.json")):
      return "done"
    last = [e["event"] for e in self.events() if e["trial"] == trial.id]
    return {"start": "started"}.get(last[-1], last[-1]) if last else "pending"


@dataclasses.dataclass
class TrialResult:
  """How a trial's run ended: 'done', 'skipped' (finished before), 'failed', 'stopped', or
  'running' (another live process holds its workdir: not started)."""

  trial: Trial
  status: str
  metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)
  seconds: float = 0.0
  log_tail: str = ""


class LocalRunner:
  """Runs trials as `python -m research.cli.train` subprocesses, `parallel` at a time.

  Each trial's stdout and stderr go to WORKDIR/train.log. `device_groups` (CUDA_VISIBLE_DEVICES
  values, e.g. ["0,1", "2,3"]) gives each running trial its own GPUs. Trials stay in the sweep's
  process group, so killing the group (or Ctrl-C in a terminal) stops them all; SIGTERM to the
  sweep is forwarded to its trials, which save a checkpoint and exit.
  """

  def __init__(self, sweep: SweepDir, config_path: str, parallel: int = 1,
               device_groups: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None,
               train_script: Optional[str] = None, log: Callable[[str], None] = print):
    self.sweep = sweep
    self.config_path = config_path
    self.env = dict(os.environ if env is None else env)
    self.train_script = train_script
    self.log = log
    self._slots: "queue.Queue[Optional[str]]" = queue.Queue()
    for group in (device_groups or [None] * max(1, parallel))[:max(1, parallel)]:
      self._slots.put(group)
    self.parallel = self._slots.qsize()
    self._running: Dict[int, subprocess.Popen] = {}
    self._lock = threading.Lock()
    self._stopping = False

  def stop(self) -> None:
    """Starts no more trials and asks the running ones to checkpoint and exit (SIGTERM)."""
    self._stopping = True
    with self._lock:
      for proc in self._running.values():
        proc.send_signal(signal.SIGTERM)

  def run_one(self, trial: Trial) -> TrialResult:
    """Runs one trial to its end (or returns its stored results if it finished before)."""
    workdir = self.sweep.workdir(trial)
    results = read_results(workdir)
    if results is not None:
      self.log(f"[skip]    {trial.name}: finished before")
      return TrialResult(trial, "skipped", results)
    if self._stopping:
      return TrialResult(trial, "stopped")
    holder = workdir_lib.is_held(workdir)
    if holder is not None:
      self.log(f"[running] {trial.name}: its workdir is in use by {holder}; not started again")
      return TrialResult(trial, "running")
    group = self._slots.get()
    start = time.perf_counter()
    try:
      returncode, log_start = self._run_process(trial, workdir, group)
    finally:
      self._slots.put(group)
    seconds = time.perf_counter() - start
    results = read_results(workdir)
    if results is not None:
      write_hparams(workdir, trial.swept, results)  # TensorBoard's HParams tab
      self.sweep.log_event("done", trial, seconds=round(seconds, 2))
      self.log(f"[done]    {trial.name} in {seconds:.1f} s: " + ", ".join(
          f"{k} {format_value(v)}" for k, v in results.items() if k.count("/") == 1))
      return TrialResult(trial, "done", results, seconds)
    if returncode in (0, EXIT_PREEMPTED) or self._stopping:
      self.sweep.log_event("stopped", trial, seconds=round(seconds, 2), returncode=returncode)
      self.log(f"[stopped] {trial.name} after {seconds:.1f} s")
      return TrialResult(trial, "stopped", seconds=seconds)
    tail = _tail(os.path.join(workdir, "train.log"), log_start)
    self.sweep.log_event("failed", trial, seconds=round(seconds, 2), returncode=returncode)
    self.log(f"[failed]  {trial.name} (exit code {returncode}) after {seconds:.1f} s; end of "
             f"{os.path.join(workdir, 'train.log')}:\n" + _indent(tail))
    return TrialResult(trial, "failed", seconds=seconds, log_tail=tail)

  def _run_process(self, trial: Trial, workdir: str, group: Optional[str]) -> tuple[int, int]:
    os.makedirs(workdir, exist_ok=True)
    env = dict(self.env)
    if group is not None:
      env["CUDA_VISIBLE_DEVICES"] = group
    command = train_command(self.config_path, workdir, trial.overrides, script=self.train_script)
    log_path = os.path.join(workdir, "train.log")
    with open(log_path, "ab") as log:
      log_start = log.tell()
      log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} sweep starts: {' '.join(command)}\n".encode())
      log.flush()
      proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
      with self._lock:
        self._running[proc.pid] = proc
      self.sweep.log_event("start", trial, pid=proc.pid, devices=group)
      self.log(f"[start]   {trial.name}" + (f" on devices {group}" if group is not None else ""))
      try:
        return proc.wait(), log_start
      finally:
        with self._lock:
          self._running.pop(proc.pid, None)

  def run_all(self, trials: Sequence[Trial]) -> List[TrialResult]:
    """Runs every unfinished trial; a failure is reported and the other trials go on."""
    previous = None
    if threading.current_thread() is threading.main_thread():
      previous = signal.signal(signal.SIGTERM, lambda signum, frame: self.stop())
    try:
      with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
        futures = [pool.submit(self.run_one, trial) for trial in trials]
        try:
          return [future.result() for future in futures]
        except KeyboardInterrupt:
          self.stop()
          raise
    finally:
      if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def summarize(results: Sequence[TrialResult], seconds: float) -> str:
  """One line: how many trials ended how, and the wall time."""
  counts: Dict[str, int] = {}
  for r in results:
    counts[r.status] = counts.get(r.status, 0) + 1
  parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
  return f"{len(results)} trials: {parts} ({seconds:.1f} s)"


def gpu_groups(per_trial: int) -> List[str]:
  """The visible GPUs (CUDA_VISIBLE_DEVICES, else nvidia-smi -L) in groups of `per_trial`."""
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible is None:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
    visible = ",".join(str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU"))
  gpus = [g for g in visible.split(",") if g]
  if len(gpus) < per_trial:
    raise ValueError(f"{per_trial} GPUs per trial, but only {len(gpus)} visible ({visible!r})")
  return [",".join(gpus[i:i + per_trial]) for i in range(0, len(gpus) - per_trial + 1, per_trial)]


def _tail(path: str, start: int) -> str:
  with open(path, "rb") as f:
    f.seek(start)
    lines = f.read().decode(errors="replace").splitlines()
  return "\n".join(lines[-LOG_TAIL_LINES:])


def _indent(text: str) -> str:
  return "\n".join("    | " + line for line in text.splitlines())

