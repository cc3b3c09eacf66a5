"""A run's workdir as shared state: who holds it, how far the run got, which config it runs.

Files (all written by process 0 only; the other processes of a multi-host run share the workdir
and never contend for it):
  lock             an fcntl lock held for the run's life (released by the kernel when the process
                   dies, so a killed run never leaves a lock that blocks);
  heartbeat.json   {"host", "pid", "time"}, refreshed every HEARTBEAT_SECONDS by a thread, so a
                   second run on a file system without working locks (NFS, Lustre) sees a live
                   holder on another host; older than STALE_SECONDS it is taken over with a warning;
  run_state.json   {"state": "running"|"finished"|"failed"|"preempted"|"nan", "step", "num_steps",
                   "started", "updated", "wall_seconds", "host", "pid", "error", "last_checkpoint"},
                   written atomically at start, at every log/checkpoint step and at the end;
  config.json      the run's current config (what evaluate/predict read);
  config_history/step_<S>.json  every version of config.json, named by the step it applied from.

`run_status(workdir)` reads run_state.json and resolves "running" from the lock and heartbeat:
a "running" state whose process is gone is reported as "failed" with error "killed ...".
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from absl import logging
from ml_collections import ConfigDict

from research.core.errors import ConfigError, WorkdirBusyError

HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 60.0
STATES = ("running", "finished", "failed", "preempted", "nan")

# Config fields that may change when a run resumes: they change no computed number (logging,
# evaluation and checkpoint intervals, data loading, caches). A dotted path also covers the fields
# under it. Switches that only add logging or inspection belong here.
FREE_ON_RESUME = (
    "log_every_steps", "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "async_checkpointing", "compilation_cache_dir", "resume_config_change", "eval_batch_size",
    "dataset.num_workers", "dataset.cache_mb", "dataset.prefetch_batches", "dataset.data_dir",
    # Histograms and pictures: logged, never part of the update. (monitor.module_stats is not free:
    # its statistics are accumulated in the checkpointed train-metric sums.)
    "monitor.weight_histograms", "monitor.grad_histograms", "monitor.confusion_matrix",
)
# Fields that may change on resume with a warning: the schedule follows the new length.
DURATION_FIELDS = ("num_train_steps", "num_epochs")


def _path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


def read_json(path: str) -> Optional[Any]:
  """The JSON content of `path`, or None if it is missing or cut short."""
  try:
    with open(path) as f:
      return json.load(f)
  except (FileNotFoundError, ValueError):
    return None


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes `obj` to `path` through a temporary file and a rename (never half a file)."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _describe(heartbeat: Optional[Mapping[str, Any]]) -> str:
  if not heartbeat:
    return "a process that wrote no heartbeat"
  age = time.time() - float(heartbeat.get("time", 0))
  return f"pid {heartbeat.get('pid')} on host {heartbeat.get('host')} (heartbeat {age:.0f} s ago)"


def _heartbeat_alive(heartbeat: Optional[Mapping[str, Any]]) -> bool:
  """Whether the heartbeat's writer looks alive: fresh, and on this host its pid exists."""
  if not heartbeat or time.time() - float(heartbeat.get("time", 0)) >= STALE_SECONDS:
    return False
  if heartbeat.get("host") == socket.gethostname():
    return _pid_alive(int(heartbeat.get("pid", -1)))
  return True


def _lock_held(workdir: str) -> bool:
  """Whether another open file holds WORKDIR/lock (tried without blocking, released at once)."""
  path = _path(workdir, "lock")
  if not os.path.exists(path):
    return False
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
    except OSError:
      return False
    fcntl.flock(f, fcntl.LOCK_UN)
  return False


def is_held(workdir: str) -> Optional[str]:
  """A description of the live process holding `workdir`, or None if no live process holds it."""
  heartbeat = read_json(_path(workdir, "heartbeat.json"))
  if _heartbeat_alive(heartbeat) or _lock_held(workdir):
    return _describe(heartbeat)
  return None


class WorkdirLock:
  """Holds WORKDIR/lock and refreshes WORKDIR/heartbeat.json for the life of a run.

  `enabled=False` (the processes other than 0 of a multi-host run) makes it a no-op.
  Entering raises WorkdirBusyError naming the holder when another live run holds the workdir.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.enabled = enabled
    self._file = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def __enter__(self) -> "WorkdirLock":
    if not self.enabled:
      return self
    os.makedirs(self.workdir, exist_ok=True)
    self._file = open(_path(self.workdir, "lock"), "a+")
    os_lock = self._os_lock()
    heartbeat = read_json(_path(self.workdir, "heartbeat.json"))
    ours = heartbeat and heartbeat.get("pid") == os.getpid() and heartbeat.get("host") == socket.gethostname()
    if heartbeat and not ours and _heartbeat_alive(heartbeat):
      # The OS lock is free: on this host that proves the holder is gone (its pid was reused);
      # on another host the file system may not share locks, so a fresh heartbeat wins.
      if not (os_lock and heartbeat.get("host") == socket.gethostname()):
        self._release_file()
        raise self._busy(heartbeat)
    if heartbeat and not ours:  # A clean exit removes the heartbeat: its holder died.
      logging.warning("workdir %s: taking over from %s, which is no longer running", self.workdir,
                      _describe(heartbeat))
    self._beat()
    self._thread = threading.Thread(target=self._beat_loop, name="workdir-heartbeat", daemon=True)
    self._thread.start()
    return self

  def _os_lock(self) -> bool:
    """Takes the fcntl lock (retrying for a second); False where the file system has no locks."""
    deadline = time.time() + 1.0
    while True:
      try:
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
      except BlockingIOError:
        if time.time() >= deadline:
          heartbeat = read_json(_path(self.workdir, "heartbeat.json"))
          self._release_file()
          raise self._busy(heartbeat) from None
        time.sleep(0.05)
      except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
          logging.warning("workdir %s: the file system has no file locks (%s); relying on the "
                          "heartbeat file", self.workdir, e)
          return False
        raise

  def _busy(self, heartbeat: Optional[Mapping[str, Any]]) -> WorkdirBusyError:
    return WorkdirBusyError(
        f"workdir {self.workdir} is in use by another run: {_describe(heartbeat)}. Wait for it to "
        f"finish (research-runs {self.workdir}), stop it, or use another --workdir")

  def _beat(self) -> None:
    write_json_atomic(_path(self.workdir, "heartbeat.json"),
                      {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})

  def _beat_loop(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        self._beat()
      except OSError as e:  # A full disk must not kill the run from this thread; the loop reports it.
        logging.warning("workdir %s: heartbeat not written: %s", self.workdir, e)

  def _release_file(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def __exit__(self, *exc) -> None:
    if not self.enabled:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    with contextlib.suppress(OSError):
      os.remove(_path(self.workdir, "heartbeat.json"))
    self._release_file()


class RunRecorder:
  """Writes WORKDIR/run_state.json (process 0 only; a no-op elsewhere).

  `started` and the accumulated `wall_seconds` carry over from an earlier process of the same run.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = _path(os.path.abspath(workdir), "run_state.json")
    self.enabled = enabled
    previous = (read_json(self.path) if enabled else None) or {}
    self._wall_before = float(previous.get("wall_seconds", 0.0))
    self._t0 = time.time()
    self.record: Dict[str, Any] = {
        "state": "running", "step": int(previous.get("step", 0)),
        "num_steps": int(previous.get("num_steps", 0)), "started": previous.get("started", self._t0),
        "updated": self._t0, "wall_seconds": self._wall_before, "host": socket.gethostname(),
        "pid": os.getpid(), "last_checkpoint": previous.get("last_checkpoint")}

  def update(self, state: str = "running", error: Optional[str] = None, **fields: Any) -> None:
    """Records `state` and any of step, num_steps, last_checkpoint; `error` for failed/nan."""
    if not self.enabled:
      return
    assert state in STATES, state
    now = time.time()
    self.record.update(fields, state=state, updated=now,
                       wall_seconds=round(self._wall_before + now - self._t0, 3))
    self.record.pop("error", None)
    if error is not None:
      self.record["error"] = error
    write_json_atomic(self.path, self.record)


def run_status(workdir: str) -> Dict[str, Any]:
  """WORKDIR/run_state.json with "running" resolved from the lock and the heartbeat.

  A run whose state says "running" but whose process is gone is reported as {"state": "failed",
  "error": "killed ...", "killed": True}. A workdir without run_state.json (a run of an older
  version) is "finished" if it holds results.json, else "unknown".
  """
  state = read_json(_path(workdir, "run_state.json"))
  if state is None:
    finished = os.path.exists(_path(workdir, "results.json"))
    return {"state": "finished" if finished else "unknown"}
  if state.get("state") == "running":
    holder = is_held(workdir)
    if holder is None:
      state = dict(state, state="failed", killed=True,
                   error=f"killed: pid {state.get('pid')} on host {state.get('host')} stopped at "
                         f"step {state.get('step')} without recording an end state")
  return state


# --- the config across resumes ---

def flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  """{"a.b": value} of a nested dict."""
  flat: Dict[str, Any] = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def config_json(config: ConfigDict) -> Dict[str, Any]:
  """The config as config.json stores it (tuples as lists)."""
  return json.loads(config.to_json_best_effort())


def _free(path: str) -> bool:
  return any(path == f or path.startswith(f + ".") for f in FREE_ON_RESUME)


_MISSING = object()


def _default(path: str, config: Mapping[str, Any]) -> Any:
  """The value a field absent from a config takes: the core's default, or for `model.<key>` /
  `task.<key>` the registered model's field default / the task's config_defaults() (as JSON);
  _MISSING if unknown."""
  import dataclasses
  from research.core.config import default_config
  from research.core.registry import MODELS, TASKS  # filled by the caller's imports
  section, _, key = path.partition(".")
  value: Any = _MISSING
  name = (config.get(section) or {}).get("name") if section in ("model", "task") else None
  if section == "task" and name in TASKS:
    value = TASKS.get(name).config_defaults().to_dict().get(key, _MISSING)
  elif section == "model" and name in MODELS:
    entry = MODELS.get(name)
    cls = getattr(entry, "fn", entry)
    fields = {f.name: f.default for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    value = dict(fields, **getattr(entry, "defaults", {})).get(key, _MISSING)
  else:
    value = flatten(config_json(default_config())).get(path, _MISSING)
  if value is _MISSING or value is dataclasses.MISSING:
    return _MISSING
  try:
    return json.loads(json.dumps(value))
  except TypeError:
    return _MISSING


def config_changes(stored: Mapping[str, Any], new: Mapping[str, Any]
                   ) -> Tuple[List[str], List[str], List[str]]:
  """(fields that change what is computed, duration fields, free fields) that differ, each as
  'path: old -> new'. A field present on one side only counts when its value differs from its
  default (so a knob a newer config lists explicitly does not block an old run's resume)."""
  old_flat, new_flat = flatten(stored), flatten(new)
  blocking, duration, free = [], [], []
  for path in sorted(set(old_flat) | set(new_flat)):
    missing = _MISSING
    old, cur = old_flat.get(path, missing), new_flat.get(path, missing)
    if old == cur:
      continue
    if (old is missing and cur == _default(path, new)) or (cur is missing and old == _default(path, stored)):
      continue
    line = (f"{path}: {'(absent)' if old is missing else json.dumps(old)} -> "
            f"{'(absent)' if cur is missing else json.dumps(cur)}")
    (duration if path in DURATION_FIELDS else free if _free(path) else blocking).append(line)
  return blocking, duration, free


def check_resume_config(config: ConfigDict, workdir: str) -> None:
  """Compares `config` with the run's stored config.json before resuming from a checkpoint.

  Raises ConfigError with the diff when a field that changes what is computed differs (unless
  config.resume_config_change == 'allow'); logs a warning when the duration changed.
  """
  stored = read_json(_path(workdir, "config.json"))
  if stored is None:
    return
  blocking, duration, free = config_changes(stored, config_json(config))
  if blocking and config.get("resume_config_change", "error") != "allow":
    raise ConfigError(
        f"the config differs from the one {workdir} was trained with, in fields that change what "
        f"is computed:\n  " + "\n  ".join(blocking) + "\nTo resume with the new config anyway, add "
        "--config.resume_config_change=allow (the old config is kept in config_history/); to start "
        "a new run, use another --workdir.")
  if blocking:
    logging.warning("resuming with a changed config (resume_config_change=allow): %s", "; ".join(blocking))
  if duration:
    logging.warning("the run's duration changed (%s): the learning-rate schedule follows the new "
                    "length from here on", "; ".join(duration))
  if free:
    logging.info("config changes that do not change the computation: %s", "; ".join(free))


def record_config(workdir: str, config: ConfigDict, step: int) -> None:
  """Makes config.json the run's current config; every version is kept in
  config_history/step_<S>.json, S the step it applies from."""
  new = config_json(config)
  path = _path(workdir, "config.json")
  current = read_json(path)
  history = _path(workdir, "config_history")
  if current == new and os.path.isdir(history):
    return
  os.makedirs(history, exist_ok=True)
  if current is not None and current != new and not os.listdir(history):
    write_json_atomic(os.path.join(history, "step_0.json"), current)
  write_json_atomic(os.path.join(history, f"step_{step}.json"), new)
  write_json_atomic(path, new)


def config_history(workdir: str) -> List[Tuple[int, Dict[str, Any]]]:
  """(step it applied from, config) of every version of the run's config, oldest first."""
  history = _path(workdir, "config_history")
  if not os.path.isdir(history):
    return []
  steps = sorted(int(f[5:-5]) for f in os.listdir(history) if f.startswith("step_") and f.endswith(".json"))
  return [(s, read_json(os.path.join(history, f"step_{s}.json"))) for s in steps]


def find_runs(root: str) -> Iterator[str]:
  """Every workdir under `root` (recursively, `root` included): a folder with run_state.json or
  config.json. Sorted; checkpoint and TensorBoard folders are not descended into."""
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d not in ("checkpoints", "tensorboard", "eval", "config_history"))
    if "run_state.json" in files or "config.json" in files:
      yield folder
