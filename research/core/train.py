"""The one training loop: `train_and_evaluate(config, workdir)` for every task.

Order of work at step s (after the update that makes the state's step s):
  1. log step: fetch the train-metric accumulators, stop on NaN/Inf, write train/* metrics;
  2. eval step: evaluate over the whole eval split, write eval/* metrics;
  3. checkpoint step: save (never a state whose loss was NaN/Inf: the check runs first).
The data position, the RNG stream and the metric accumulators all derive from the step and are
checkpointed, so a run killed at any point and restarted with the same command ends with exactly
the parameters and metrics of an uninterrupted run. SIGTERM saves a checkpoint, then returns.
"""
from __future__ import annotations

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

from research.core import parallel, train_stats
from research.core.checkpoint import Checkpointer, load_variables, merge_pretrained
from research.core.config import ConfigError, duration_steps, validate
from research.core.metrics import MetricWriter
from research.core.optim import build_optimizer, build_schedule
from research.core.registry import TASKS
from research.core.state import TrainState, count_params
from research.data import datasets, pipeline

PyTree = Any


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


class _Preemption:
  """Turns SIGTERM into a flag the loop checks after each step (main thread only)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self) -> "_Preemption":
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    logging.warning("SIGTERM received: saving a checkpoint, then stopping")
    self.requested = True

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class Trainer:
  """Builds everything a run needs from the config; `run()` trains and evaluates."""

  def __init__(self, config: ConfigDict, workdir: str):
    task_cls = TASKS.get(config.task.name) if config.task.name in TASKS else None
    if task_cls is None:
      raise ConfigError(f"config.task.name: unknown task {config.task.name!r}; known: {', '.join(TASKS.names())}")
    validate(config)
    self.config = config
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.mesh = parallel.make_mesh()
    ds = config.dataset
    self.train_source = datasets.get_data_source(ds.name, ds.train_split, ds.data_dir)
    self.eval_source = datasets.get_data_source(ds.name, ds.eval_split, ds.data_dir)
    self.task = task_cls(config, datasets.get_builder(ds.name, ds.data_dir).info)
    # Decoded (and validated) once and held in memory when small enough: config.dataset.cache_mb.
    cache = int(ds.cache_mb) << 20
    self.train_source = datasets.maybe_cache(self.task.wrap_source(self.train_source, ds.train_split), cache)
    self.eval_source = datasets.maybe_cache(self.task.wrap_source(self.eval_source, ds.eval_split), cache)
    self.num_steps = duration_steps(config, len(self.train_source))
    self.local_batch = parallel.local_batch_size(config.batch_size, self.mesh)
    self.eval_batch = int(config.eval_batch_size or config.batch_size)
    parallel.local_batch_size(self.eval_batch, self.mesh)
    self.tx = build_optimizer(config.optimizer, self.num_steps)
    self.schedule = build_schedule(config.optimizer, self.num_steps)
    self.rep = parallel.replicated(self.mesh)
    self.data_sharding = parallel.batch_sharded(self.mesh)
    init_rng, self.train_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    self.sample = parallel.to_global(
        pipeline.first_example(
            self.train_source, lambda e: self.task.preprocess_train(e, np.random.default_rng(0)),
            self.local_batch), self.mesh)
    self.state = self._init_state(init_rng)
    metric_shapes = jax.eval_shape(  # the task's metrics and config.monitor's statistics
        lambda s, b: train_stats.train_step(self.task, config.monitor, s, b, self.train_rng)[1], self.state, self.sample)
    self.zero_accum = {k: (np.zeros((), np.float32), np.zeros((), np.float32)) for k in metric_shapes}
    self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                     config.keep_checkpoints, config.async_checkpointing)

  # --- state ---
  def _init_state(self, rng: jax.Array) -> TrainState:
    init = jax.jit(lambda r, b: self.task.create_state(self.task.init_variables(r, b), self.tx),
                   out_shardings=self.rep)
    return init(rng, self.sample)

  def _apply_init_from(self, state: TrainState) -> TrainState:
    cfg = self.config.init_from
    pretrained = load_variables(cfg.workdir)
    fresh = {"params": state.params, **state.model_state}
    wanted = {k: v for k, v in pretrained.items() if k in tuple(cfg.collections)}
    merged, _ = merge_pretrained(fresh, wanted, tuple(cfg.reinit), tuple(tuple(r) for r in cfg.rename))
    merged = parallel.replicate(merged, self.mesh)
    params = merged.pop("params")
    return jax.jit(lambda p, ms: self.task.create_state({"params": p, **ms}, self.tx),
                   out_shardings=self.rep)(params, merged)

  # --- steps ---
  def _compile_train_step(self, accum: PyTree):
    """The jitted step (state, accum, batch) -> (state, accum, gradients or None); the gradients
    only with config.monitor.grad_histograms (histograms at evaluations)."""
    task, train_rng, monitor = self.task, self.train_rng, self.config.monitor

    def step(state: TrainState, accum: PyTree, batch: PyTree) -> Tuple[TrainState, PyTree, PyTree]:
      rng = jax.random.fold_in(train_rng, state.step)
      state, metrics, grads = train_stats.train_step(task, monitor, state, batch, rng)
      accum = {k: (s + metrics[k].astype(jnp.float32), c + 1.0) for k, (s, c) in accum.items()}
      return state, accum, (grads if monitor.grad_histograms else None)

    jitted = jax.jit(step, in_shardings=(self.rep, self.rep, self.data_sharding),
                     out_shardings=(self.rep, self.rep, self.rep), donate_argnums=(0, 1))
    start = time.perf_counter()
    self.lowered_train_step = jitted.lower(self.state, accum, self.sample)
    compiled = self.lowered_train_step.compile()
    self.compile_seconds = time.perf_counter() - start
    return compiled

  def evaluate(self, state: TrainState) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """Metrics over the whole eval split, each example counted exactly once."""
    if not hasattr(self, "_eval_step"):
      self._eval_step = jax.jit(self.task.eval_step, in_shardings=(self.rep, self.data_sharding))
    if not hasattr(self, "_predict"):
      self._predict = jax.jit(self.task.predict, in_shardings=(self.rep, self.data_sharding))
    totals, pictures = None, {}
    outputs: List[PyTree] = []
    for i, batch in enumerate(pipeline.eval_batches(
        self.eval_source, self.task.preprocess_eval, self.eval_batch, self.config.dataset.num_workers)):
      device_batch = parallel.to_global(batch, self.mesh)
      sums, out = self._eval_step(state, device_batch)
      totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
      if out is not None:
        outputs.append(_fetch(out))
      if i == 0:
        predictions = self._predict(state, device_batch)
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
      raise FloatingPointError(
          f"training loss is {loss} (NaN/Inf) in steps {since + 1}..{step}; training stopped; {kept}. "
          "Lower the learning rate, clip gradients (config.optimizer.grad_clip_norm) or check the data.")

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

  def run(self) -> Dict[str, Any]:
    config = self.config
    accum = parallel.replicate(self.zero_accum, self.mesh)
    start_step = 0
    latest = self.checkpointer.latest_step()
    if latest is not None:
      restored, meta = self.checkpointer.restore(latest, {"state": self.state, "accum": accum})
      self.state, accum = restored["state"], restored["accum"]
      start_step = int(meta["next_batch_index"])
      logging.info("resumed from %s/%d", self.checkpointer.directory, latest)
    elif config.init_from.workdir:
      self.state = self._apply_init_from(self.state)
    results_path = os.path.join(self.workdir, "results.json")
    if start_step >= self.num_steps and os.path.exists(results_path):
      logging.info("run already finished at step %d; results in %s", start_step, results_path)
      with open(results_path) as f:
        return json.load(f)
    self._write_json("config.json", json.loads(config.to_json_best_effort()))
    writer = MetricWriter(self.workdir, start_step)
    writer.write_text(start_step, {"config": "```\n" + config.to_json_best_effort(indent=1) + "\n```"})
    logging.info("model %s: %s parameters; %d steps, global batch %d on %d devices",
                 config.model.name, f"{count_params(self.state.params):,}", self.num_steps,
                 config.batch_size, self.mesh.devices.size)
    train_step = self._compile_train_step(accum)
    logging.info("train step compiled in %.1f s", self.compile_seconds)
    batches = parallel.prefetch_to_device(
        pipeline.train_batches(self.train_source, self.task.preprocess_train, self.local_batch,
                               config.seed, start_batch=start_step, num_workers=config.dataset.num_workers),
        self.mesh, config.dataset.prefetch_batches)
    result: Dict[str, Any] = {"step": start_step}
    last_log, last_time = start_step, time.perf_counter()
    try:
      with _Preemption() as preemption:
        for step in range(start_step + 1, self.num_steps + 1):
          self.state, accum, grads = train_step(self.state, accum, next(batches))
          last = step == self.num_steps
          stop = preemption.requested
          if step % config.log_every_steps == 0 or last:
            sums = _fetch(accum)
            self._check_finite(float(sums["loss"][0]), step, last_log)
            now = time.perf_counter()
            rate = (step - last_log) / max(now - last_time, 1e-9)
            scalars = {f"train/{k}": float(s) / max(float(c), 1.0) for k, (s, c) in sums.items()}
            scalars["train/learning_rate"] = float(self.schedule(step - 1))
            scalars["perf/steps_per_sec"] = rate
            scalars["perf/examples_per_sec"] = rate * config.batch_size
            writer.write_scalars(step, scalars)
            logging.info("step %d/%d  loss %.4f  %.1f steps/s", step, self.num_steps,
                         scalars["train/loss"], rate)
            accum = parallel.replicate(self.zero_accum, self.mesh)
            last_log, last_time = step, time.perf_counter()
          elif step % config.checkpoint_every_steps == 0 or stop:
            self._check_finite(float(_fetch(accum["loss"][0])), step, last_log)
          if (config.eval_every_steps and step % config.eval_every_steps == 0) or last:
            if config.monitor.weight_histograms or grads is not None:  # monitor: this step's histograms
              writer.write_histograms(step, train_stats.histograms(
                  _fetch(self.state.params) if config.monitor.weight_histograms else None, _fetch(grads)))
            scalars, artifacts = self.evaluate(self.state)
            writer.write_scalars(step, {f"eval/{k}": v for k, v in scalars.items()})
            self._write_artifacts(step, artifacts, writer)
            logging.info("eval at step %d: %s", step, _summary_line(scalars))
            result = {"step": step, **{f"eval/{k}": v for k, v in scalars.items()}}
            last_time = time.perf_counter()
          if step % config.checkpoint_every_steps == 0 or last or stop:
            self.checkpointer.save(step, {"state": self.state, "accum": accum},
                                   {"step": step, "next_batch_index": step})
          if stop:
            self.checkpointer.wait()
            logging.warning("stopped by SIGTERM at step %d; checkpoint saved", step)
            return {"step": step, "preempted": True}
        self._write_json("results.json", result)
    finally:
      self.checkpointer.close()
      writer.close()
    return result


def train_and_evaluate(config: ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint), evaluates, returns the final
  eval metrics {'step': N, 'eval/<metric>': value}."""
  setup_compilation_cache(config, workdir)
  return Trainer(config, workdir).run()


def _summary_line(scalars: Dict[str, float]) -> str:
  """The headline metrics for the log: the least nested names ('accuracy', or a multi-task run's
  'detection/mAP'), leaving breakdowns such as per-class 'iou/<class>' to the metric files."""
  depth = min((k.count("/") for k in scalars), default=0)
  return ", ".join(f"{k} {v:.4f}" for k, v in scalars.items() if k.count("/") == depth)
