"""The one training loop: `train_and_evaluate(config, workdir)` for every task.

Order of work at step s (after the update that makes the state's step s):
  1. log step: fetch the train-metric accumulators, stop on NaN/Inf, write train/* metrics;
  2. checkpoint step: save (never a state whose loss was NaN/Inf: the check runs first);
  3. eval step: evaluate over the whole eval split, write eval/* metrics (after the save, so a
     failure at evaluation loses no training: the rerun resumes at s and runs that evaluation).
The data position, the RNG stream and the metric accumulators all derive from the step and are
checkpointed, so a run killed at any point and restarted with the same command ends with exactly
the parameters and metrics of an uninterrupted run. SIGTERM and a first Ctrl-C save a checkpoint,
then return (all processes of a multi-host run agree on the step); results.json is written only
with the final evaluation, and a rerun of a finished run whose results are missing re-evaluates
its last checkpoint. The workdir is locked for the run's life and its state recorded
(research.core.workdir).
"""
from __future__ import annotations

import concurrent.futures
import json
import math
import os
import signal
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image
from jax.experimental import multihost_utils
from ml_collections import ConfigDict

from research.core import parallel, preflight, train_stats, workdir as workdir_lib
from research.core.checkpoint import Checkpointer, load_variables, merge_pretrained
from research.core.compile_options import known_options, run_once_options
from research.core.config import duration_steps, validate
from research.core.errors import ConfigError, NonFiniteLossError
from research.core.metrics import MetricWriter, TrainSums, eval_records
from research.core.optim import build_optimizer, build_schedule
from research.core.records import NamedRecords
from research.core.registry import TASKS
from research.core.state import TrainState, count_params
from research.data import datasets, pipeline

PyTree = Any
# An evaluation of at most this many batches, run once at the end, is compiled as a program
# executed once (Trainer._eval_compiler_options).
_FEW_EVAL_BATCHES = 8


def setup_compilation_cache(config: ConfigDict, workdir: str) -> Optional[str]:
  """Turns on JAX's persistent compilation cache (default WORKDIR/../.jax_cache)."""
  path = config.compilation_cache_dir
  if not path:
    return None
  if path == "auto":
    path = os.path.join(os.path.dirname(os.path.abspath(workdir)), ".jax_cache")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


def _fetch(tree: PyTree) -> PyTree:
  """Device -> host numpy for (possibly multi-host) global arrays."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def _zeros_like_host(tree: PyTree) -> PyTree:
  return jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), tree)


class _StopRequest:
  """Turns SIGTERM and a first Ctrl-C (SIGINT) into a flag the loop checks after each step; a
  second Ctrl-C stops at once (KeyboardInterrupt). Handlers are installed from the main thread only."""

  def __init__(self):
    self.signal_name: Optional[str] = None
    self._previous: Dict[int, Any] = {}

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def __enter__(self) -> "_StopRequest":
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    if signum == signal.SIGINT and self.signal_name == "SIGINT":
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt("second Ctrl-C: stopped at once, without saving")
    if self.signal_name is None:
      self.signal_name = signal.Signals(signum).name
      logging.warning("%s received: saving a checkpoint at the end of this step, then stopping%s",
                      self.signal_name,
                      " (Ctrl-C again stops at once, without saving)" if signum == signal.SIGINT else "")

  def __exit__(self, *exc) -> None:
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


def _agreed(local: bool, sync: bool) -> bool:
  """The stop decision all processes share: one process alone decides at every step; several
  all-gather their flags at the `sync` steps (the same steps on every process) and stop if any
  was asked to, so every host saves the same step."""
  if jax.process_count() == 1:
    return local
  if not sync:
    return False
  return bool(np.any(multihost_utils.process_allgather(np.asarray(local, np.int32))))


class Trainer:
  """Builds everything a run needs from the config; `run()` trains and evaluates."""

  def __init__(self, config: ConfigDict, workdir: str):
    task_cls = TASKS.get(config.task.name) if config.task.name in TASKS else None
    if task_cls is None:
      raise ConfigError(f"config.task.name: unknown task {config.task.name!r}; known: {', '.join(TASKS.names())}")
    validate(config)
    preflight.check_packages(task_cls, config)
    preflight.check_runs(task_cls, config)
    self.config = config
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.mesh = parallel.make_mesh()
    n = self.mesh.devices.size
    for field in ("batch_size", "eval_batch_size"):
      if config[field] % n:
        raise ConfigError(f"config.{field} {config[field]} does not divide over {n} devices; "
                          f"use a multiple of {n}")
    ds = config.dataset
    info = datasets.get_builder(ds.name, ds.data_dir).info
    preflight.check_splits(info, config)
    train_source = NamedRecords(datasets.get_data_source(ds.name, ds.train_split, ds.data_dir),
                                ds.name, ds.train_split)
    eval_source = NamedRecords(datasets.get_data_source(ds.name, ds.eval_split, ds.data_dir),
                               ds.name, ds.eval_split)
    self.task = task_cls(config, info)
    train_source = self.task.wrap_source(train_source, ds.train_split)
    eval_source = self.task.wrap_source(eval_source, ds.eval_split)
    # Decoded (and validated) once and held in memory when small enough (config.dataset.cache_mb),
    # in a thread, while this one traces and compiles: `train_source` and `eval_source` wait for it.
    cache = int(ds.cache_mb) << 20
    executor = concurrent.futures.ThreadPoolExecutor(1, "research-data-cache")
    self._sources = executor.submit(
        lambda: (datasets.maybe_cache(train_source, cache), datasets.maybe_cache(eval_source, cache)))
    executor.shutdown(wait=False)  # its one thread ends when the split is cached
    self.num_steps = duration_steps(config, len(train_source))
    self.local_batch = parallel.local_batch_size(config.batch_size, self.mesh)
    self.eval_batch = int(config.eval_batch_size or config.batch_size)
    parallel.local_batch_size(self.eval_batch, self.mesh)
    self.tx = build_optimizer(config.optimizer, self.num_steps)
    self.schedule = jax.jit(build_schedule(config.optimizer, self.num_steps))  # one compile, not one per op
    self.compiler_options = known_options(config.compiler_options.to_dict())  # train and eval programs
    self.rep = parallel.replicated(self.mesh)
    self.data_sharding = parallel.batch_sharded(self.mesh)
    self.sample = parallel.to_global(
        pipeline.first_example(
            train_source, lambda e: self.task.preprocess_train(e, np.random.default_rng(0)),
            self.local_batch), self.mesh)
    self.state, self.train_rng = self._init_state(int(config.seed))
    # The task's step with config.monitor's statistics, traced once: its metric names come from
    # this trace, and the train step calls it from jit's trace cache instead of tracing it again.
    self._task_step = jax.jit(lambda s, b, r: train_stats.train_step(self.task, config.monitor, s, b, r))
    metric_shapes = jax.eval_shape(self._task_step, self.state, self.sample, self.train_rng)[1]
    self.train_sums = TrainSums(metric_shapes)
    self.zero_accum = self.train_sums.zeros()
    self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                     config.keep_checkpoints, config.async_checkpointing)
    self._eval_compiled: Optional[concurrent.futures.Future] = None  # set by _train

  @property
  def train_source(self) -> Any:
    """The training split (held in memory if config.dataset.cache_mb allows)."""
    return self._sources.result()[0]

  @property
  def eval_source(self) -> Any:
    """The evaluation split (held in memory if config.dataset.cache_mb allows)."""
    return self._sources.result()[1]

  # --- state ---
  def checkpoint_target(self) -> PyTree:
    """What a checkpoint holds, shaped as this run's: {'state': the TrainState, 'accum': {metric:
    (sum, count)}} (zero sums), for `Checkpointer.restore` / `restore_latest`."""
    return {"state": self.state,
            "accum": parallel.replicate(self.train_sums.to_tree(self.zero_accum), self.mesh)}

  def _init_state(self, seed: int) -> Tuple[TrainState, jax.Array]:
    """(initial state, the key the train step folds its step number into), from the two halves of
    PRNGKey(seed). Both run once, so they are compiled together for compile time
    (research.core.compile_options): LeNet-5's init (its threefry bit generators) compiles in
    0.3 s instead of 3.3 s; the values agree with an optimized build to float32 rounding (the
    keys exactly)."""
    def init(seed: jax.Array, sample: PyTree) -> Tuple[TrainState, jax.Array]:
      init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
      return self.task.create_state(self.task.init_variables(init_rng, sample), self.tx), train_rng

    seed = np.int32(seed)
    lowered = jax.jit(init, out_shardings=self.rep).lower(seed, self.sample)
    return lowered.compile(compiler_options=run_once_options())(seed, self.sample)

  def _apply_init_from(self, state: TrainState) -> TrainState:
    cfg = self.config.init_from
    pretrained = load_variables(cfg.workdir)
    fresh = {"params": state.params, **state.model_state}
    wanted = {k: v for k, v in pretrained.items() if k in tuple(cfg.collections)}
    merged, _ = merge_pretrained(fresh, wanted, tuple(cfg.reinit), tuple(tuple(r) for r in cfg.rename))
    merged = parallel.replicate(merged, self.mesh)
    params = merged.pop("params")
    return jax.jit(lambda p, ms: self.task.create_state({"params": p, **ms}, self.tx),
                   out_shardings=self.rep, compiler_options=run_once_options())(params, merged)

  # --- steps ---
  def _compile_train_step(self, accum: PyTree):
    """The jitted step (state, accum, batch) -> (state, accum, gradients or None); the gradients
    only with config.monitor.grad_histograms (histograms at evaluations)."""
    task_step, train_rng, monitor, sums = self._task_step, self.train_rng, self.config.monitor, self.train_sums

    def step(state: TrainState, accum: PyTree, batch: PyTree) -> Tuple[TrainState, PyTree, PyTree]:
      rng = jax.random.fold_in(train_rng, state.step)
      state, metrics, grads = task_step(state, batch, rng)
      return state, sums.add(accum, metrics), (grads if monitor.grad_histograms else None)

    jitted = jax.jit(step, in_shardings=(self.rep, self.rep, self.data_sharding),
                     out_shardings=(self.rep, self.rep, self.rep), donate_argnums=(0, 1))
    start = time.perf_counter()
    self.lowered_train_step = jitted.lower(self.state, accum, self.sample)
    compiled = self.lowered_train_step.compile(compiler_options=self.compiler_options)
    self.compile_seconds = time.perf_counter() - start
    return compiled

  def _eval_programs(self) -> Tuple[Any, Any]:
    """(eval step (state, batch, totals) -> (totals + the batch's sums, outputs), predict), jitted
    once. The running sums are added inside the step: one program, where adding them outside
    compiled one small program per leaf shape (0.1-0.2 s of LeNet-5's final evaluation)."""
    if not hasattr(self, "_eval_step"):
      def eval_step(state: TrainState, batch: PyTree, totals: PyTree) -> Tuple[PyTree, PyTree]:
        sums, out = self.task.eval_step(state, batch)
        return jax.tree_util.tree_map(jnp.add, totals, sums), out

      options = self._eval_compiler_options()
      self._eval_step = jax.jit(eval_step, in_shardings=(self.rep, self.data_sharding, self.rep),
                                donate_argnums=(2,), compiler_options=options)
      self._predict = jax.jit(self.task.predict, in_shardings=(self.rep, self.data_sharding),
                              compiler_options=options)
    return self._eval_step, self._predict

  def _eval_compiler_options(self) -> Dict[str, Any]:
    """The train step's compiler options; or, for a run that evaluates once (at its end) an eval
    split of at most _FEW_EVAL_BATCHES batches, those of a program executed once
    (`run_once_options`): paid for by their compile, which runs beside the training steps.
    LeNet-5 on digits (3 batches): 0.55 -> 0.2 CPU s of compile, the same metrics."""
    every = self.config.eval_every_steps
    batches = -(-len(self.eval_source) // self.eval_batch)
    if (not every or every >= self.num_steps) and batches <= _FEW_EVAL_BATCHES:
      return run_once_options()
    return self.compiler_options

  def _totals_shapes(self, state: PyTree, batch: PyTree) -> PyTree:
    """ShapeDtypeStructs (replicated) of the eval step's running sums for `state` and a global
    `batch` (arrays or ShapeDtypeStructs)."""
    shapes = jax.eval_shape(self.task.eval_step, state, batch)[0]
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.rep), shapes)

  def _compile_eval_programs(self, state: PyTree) -> None:
    """Compiles the evaluation's programs for `state` (ShapeDtypeStructs) and the eval batches'
    shapes, so that the first evaluation finds them compiled (jit's cache). `_train` runs it in a
    thread while the training steps run (it reads the first eval batch on the host and runs
    nothing on the devices): LeNet-5's final evaluation 0.26 -> 0.06 s."""
    eval_step, predict = self._eval_programs()
    first = next(pipeline.eval_batches(self.eval_source, self.task.preprocess_eval, self.eval_batch, 0))
    batch = {k: jax.ShapeDtypeStruct((v.shape[0] * jax.process_count(),) + v.shape[1:], v.dtype,
                                     sharding=self.data_sharding) for k, v in first.items()}
    eval_step.lower(state, batch, self._totals_shapes(state, batch)).compile()
    predict.lower(state, batch).compile()

  def evaluate(self, state: TrainState) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """Metrics over the whole eval split, each example counted exactly once."""
    if self._eval_compiled is not None:
      self._eval_compiled.result()  # the background compile (its error, if any, is this one's)
    eval_step, predict = self._eval_programs()
    totals, pictures = None, {}
    outputs: List[PyTree] = []
    for i, batch in enumerate(pipeline.eval_batches(
        self.eval_source, self.task.preprocess_eval, self.eval_batch, self.config.dataset.num_workers)):
      device_batch = parallel.to_global(batch, self.mesh)
      if totals is None:
        totals = parallel.replicate(jax.tree_util.tree_map(
            lambda a: np.zeros(a.shape, a.dtype), self._totals_shapes(state, device_batch)), self.mesh)
      totals, out = eval_step(state, device_batch, totals)
      if parallel.one_program_in_flight(self.mesh):
        jax.block_until_ready(totals)
      if out is not None:
        outputs.append(_fetch(out))
      if i == 0:
        predictions = predict(state, device_batch)
        if predictions is not None:
          pictures = self.task.visualize(_fetch(device_batch), _fetch(predictions))
    scalars, artifacts = self.task.finalize_eval(_fetch(totals), outputs)
    if pictures:
      artifacts = {**artifacts, "images": {**artifacts.get("images", {}), **pictures}}
    return scalars, artifacts

  # --- the loop ---
  def _check_finite(self, loss: float, step: int, since: int) -> None:
    if not math.isfinite(loss):
      self.checkpointer.wait()
      latest = self.checkpointer.latest_step()
      kept = (f"the last good checkpoint (step {latest}) is kept in {self.checkpointer.directory}"
              if latest is not None else "no checkpoint had been written yet")
      raise NonFiniteLossError(
          f"training loss is {loss} (NaN/Inf) in steps {since + 1}..{step}; training stopped; {kept}. "
          "Lower the learning rate, clip gradients (config.optimizer.grad_clip_norm) or check the data.",
          step)

  def _write_json(self, name: str, obj: Any) -> None:
    if jax.process_index() != 0:
      return
    path = os.path.join(self.workdir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)

  def _write_artifacts(self, step: int, artifacts: Dict[str, Any], writer: MetricWriter) -> None:
    """JSON artifacts to eval/step_N.json; artifacts['images'] (name -> uint8 [H, W, C]) to
    TensorBoard and eval/step_N/<name>.png."""
    artifacts = dict(artifacts)
    images = artifacts.pop("images", {})
    self._write_json(os.path.join("eval", f"step_{step}.json"), {"step": step, **artifacts})
    if images and jax.process_index() == 0:
      writer.write_images(step, {f"eval/{k}": v for k, v in images.items()})
      folder = os.path.join(self.workdir, "eval", f"step_{step}")
      os.makedirs(folder, exist_ok=True)
      for name, image in images.items():
        Image.fromarray(np.asarray(image).squeeze()).save(os.path.join(folder, f"{name.replace('/', '_')}.png"))

  def _evaluate_and_write(self, step: int, writer: MetricWriter) -> Dict[str, Any]:
    """Evaluates the current state at `step`, writes eval/* metrics and artifacts; returns
    {'step': step, 'eval/<metric>': value}."""
    scalars, artifacts = self.evaluate(self.state)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in scalars.items()})
    self._write_artifacts(step, artifacts, writer)
    logging.info("eval at step %d: %s", step, _summary_line(scalars))
    return {"step": step, **{f"eval/{k}": v for k, v in scalars.items()}}

  def _logged_eval(self, step: int) -> Optional[Dict[str, Any]]:
    """The eval/* metrics metrics.jsonl holds for `step` ({'step', 'eval/...'}), or None."""
    for record in eval_records(self.workdir):
      if record.get("step") == step:
        return {"step": step, **{k: v for k, v in record.items() if k.startswith("eval/")}}
    return None

  def run(self, recorder: Optional[workdir_lib.RunRecorder] = None) -> Dict[str, Any]:
    """Trains from the latest readable checkpoint to num_steps, evaluates, writes results.json.

    Returns the final {'step', 'eval/<metric>': value}, or {'step', 'preempted': True} when a
    SIGTERM / Ctrl-C stopped the run (a checkpoint at that step is saved). `recorder` (process 0
    of train_and_evaluate) records the run's state in WORKDIR/run_state.json.
    """
    config = self.config
    recorder = recorder or workdir_lib.RunRecorder(self.workdir, enabled=False)
    accum = parallel.replicate(self.zero_accum, self.mesh)
    start_step, last_checkpoint = 0, None
    restored = self.checkpointer.restore_latest(self.checkpoint_target())
    if restored is not None:
      last_checkpoint, tree, meta = restored
      self.state = tree["state"]
      accum = parallel.replicate(self.train_sums.from_tree(_fetch(tree["accum"])), self.mesh)
      start_step = int(meta["next_batch_index"])
      logging.info("resumed from %s/%d", self.checkpointer.directory, last_checkpoint)
    elif config.init_from.workdir:
      self.state = self._apply_init_from(self.state)
    if jax.process_index() == 0:
      workdir_lib.record_config(self.workdir, config, start_step)
    recorder.update("running", step=start_step, num_steps=self.num_steps, last_checkpoint=last_checkpoint)
    results_path = os.path.join(self.workdir, "results.json")
    if start_step >= self.num_steps and os.path.exists(results_path):
      logging.info("run already finished at step %d; results in %s", start_step, results_path)
      self.checkpointer.close()
      recorder.update("finished")
      with open(results_path) as f:
        return json.load(f)
    writer = MetricWriter(self.workdir, start_step)
    try:
      if start_step >= self.num_steps:
        result = self._logged_eval(start_step)
        if result is None:
          logging.info("run finished training at step %d but has no results: evaluating its last "
                       "checkpoint", start_step)
          result = self._evaluate_and_write(start_step, writer)
        self._write_json("results.json", result)
        recorder.update("finished")
        return result
      if (start_step and config.eval_every_steps and start_step % config.eval_every_steps == 0
          and self._logged_eval(start_step) is None):
        logging.info("running the evaluation at step %d that the interrupted run did not finish", start_step)
        self._evaluate_and_write(start_step, writer)
      return self._train(start_step, last_checkpoint, accum, writer, recorder)
    finally:
      self.checkpointer.close()
      writer.close()

  def _train(self, start_step: int, last_checkpoint: Optional[int], accum: PyTree,
             writer: MetricWriter, recorder: workdir_lib.RunRecorder) -> Dict[str, Any]:
    config = self.config
    writer.write_text(start_step, {"config": "```\n" + config.to_json_best_effort(indent=1) + "\n```"})
    logging.info("model %s: %s parameters; %d steps, global batch %d on %d devices",
                 config.model.name, f"{count_params(self.state.params):,}", self.num_steps,
                 config.batch_size, self.mesh.devices.size)
    # The evaluation's programs, then the learning-rate schedule (which the first log line reads),
    # compile in a thread, started first: their tracing (Python) runs while XLA compiles the train
    # step (native code, without the GIL), their compile beside the training steps.
    executor = concurrent.futures.ThreadPoolExecutor(1, "research-eval-compile")
    state_shapes = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding, weak_type=x.weak_type), self.state)
    self._eval_compiled = executor.submit(self._compile_eval_programs, state_shapes)
    executor.submit(self.schedule, start_step)
    executor.shutdown(wait=False)
    self.checkpointer.open_in_background()  # likewise: orbax's import, before the first save
    train_step = self._compile_train_step(accum)
    logging.info("train step compiled in %.1f s", self.compile_seconds)
    batches = parallel.prefetch_to_device(
        pipeline.train_batches(self.train_source, self.task.preprocess_train, self.local_batch,
                               config.seed, start_batch=start_step, num_workers=config.dataset.num_workers,
                               preprocess_batch=self.task.preprocess_train_batch),
        self.mesh, config.dataset.prefetch_batches)
    result: Dict[str, Any] = {"step": start_step}
    last_log, last_time = start_step, time.perf_counter()
    every = lambda n, step: bool(n) and step % n == 0  # noqa: E731  (0: never)
    one_in_flight = parallel.one_program_in_flight(self.mesh)
    with _StopRequest() as stop_request:
      for step in range(start_step + 1, self.num_steps + 1):
        self.state, accum, grads = train_step(self.state, accum, next(batches))
        if one_in_flight:
          jax.block_until_ready(accum)
        last = step == self.num_steps
        log_step = every(config.log_every_steps, step) or last
        checkpoint_step = every(config.checkpoint_every_steps, step) or last
        # A signal during the last step changes nothing: the run saves, evaluates and finishes.
        stop = not last and _agreed(stop_request.requested, log_step or checkpoint_step)
        fetched = _fetch(accum) if log_step or checkpoint_step or stop else None
        if fetched is not None:
          self._check_finite(self.train_sums.means(fetched)["loss"], step, last_log)
        if log_step:
          now = time.perf_counter()
          rate = (step - last_log) / max(now - last_time, 1e-9)
          scalars = {f"train/{k}": v for k, v in self.train_sums.means(fetched).items()}
          scalars["train/learning_rate"] = float(self.schedule(step - 1))
          scalars["perf/steps_per_sec"] = rate
          scalars["perf/examples_per_sec"] = rate * config.batch_size
          writer.write_scalars(step, scalars)
          logging.info("step %d/%d  loss %.4f  %.1f steps/s", step, self.num_steps,
                       scalars["train/loss"], rate)
          accum = parallel.replicate(self.zero_accum, self.mesh)
          last_log, last_time = step, time.perf_counter()
        if checkpoint_step or stop:
          # The sums the next steps add to (zero after a log step), in the per-metric form.
          saved = self.train_sums.to_tree(self.zero_accum if log_step else fetched)
          self.checkpointer.save(step, {"state": self.state, "accum": parallel.replicate(saved, self.mesh)},
                                 {"step": step, "next_batch_index": step})
          last_checkpoint = step
        if log_step or checkpoint_step or stop:
          recorder.update("running", step=step, last_checkpoint=last_checkpoint)
        if stop:
          self.checkpointer.wait()
          logging.warning("stopped by %s at step %d; checkpoint saved; run the same command to resume",
                          stop_request.signal_name or "another process's signal", step)
          recorder.update("preempted", step=step)
          return {"step": step, "preempted": True}
        if every(config.eval_every_steps, step) or last:
          if last:
            self.checkpointer.wait()  # The final checkpoint is whole before the final evaluation.
          if config.monitor.weight_histograms or grads is not None:  # monitor: this step's histograms
            writer.write_histograms(step, train_stats.histograms(
                _fetch(self.state.params) if config.monitor.weight_histograms else None, _fetch(grads)))
          result = self._evaluate_and_write(step, writer)
          last_time = time.perf_counter()
    self._write_json("results.json", result)
    recorder.update("finished", step=self.num_steps)
    return result


def train_and_evaluate(config: ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint), evaluates, returns the final
  eval metrics {'step': N, 'eval/<metric>': value} ({'step', 'preempted': True} when stopped by a
  signal).

  Process 0 holds the workdir's lock for the whole run (WorkdirBusyError if another live run
  holds it) and records the run's state (research.core.workdir.run_status reads it). A resumed
  run's config is compared with the stored one first (ConfigError with the diff).
  """
  validate(config)
  workdir = os.path.abspath(workdir)
  primary = jax.process_index() == 0
  with workdir_lib.WorkdirLock(workdir, enabled=primary):
    if preflight.has_checkpoint(workdir):
      workdir_lib.check_resume_config(config, workdir)
    recorder = workdir_lib.RunRecorder(workdir, enabled=primary)
    try:
      setup_compilation_cache(config, workdir)
      return Trainer(config, workdir).run(recorder)
    except NonFiniteLossError as e:
      _record_end(recorder, "nan", str(e), step=e.step)
      raise
    except KeyboardInterrupt:
      _record_end(recorder, "failed", "interrupted: second Ctrl-C, stopped without saving")
      raise
    except Exception as e:
      _record_end(recorder, "failed", f"{type(e).__name__}: {e}")
      raise


def _record_end(recorder: workdir_lib.RunRecorder, state: str, error: str, **fields: Any) -> None:
  try:
    recorder.update(state, error=error, **fields)
  except OSError as e:  # A full disk: the original error is the one to report.
    logging.warning("run state not recorded: %s", e)


def _summary_line(scalars: Dict[str, float]) -> str:
  """The headline metrics for the log: the least nested names ('accuracy', or a multi-task run's
  'detection/mAP'), leaving breakdowns such as per-class 'iou/<class>' to the metric files."""
  depth = min((k.count("/") for k in scalars), default=0)
  return ", ".join(f"{k} {v:.4f}" for k, v in scalars.items() if k.count("/") == depth)
