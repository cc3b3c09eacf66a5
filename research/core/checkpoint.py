"""Checkpoints with orbax: periodic, keep-last-N, atomic, optionally async.

Layout: WORKDIR/checkpoints/<step>/{state, meta}. `state` holds the TrainState and the train-metric
accumulators (so the first log after a resume averages over the same steps as an uninterrupted
run); `meta` is JSON: the step and the data position (index of the next training batch). orbax
writes each checkpoint to a temporary directory and renames it when complete, so a run killed at
any moment leaves only whole checkpoints behind.

`restore_latest` falls back over unreadable checkpoints (a disk that lost files, a copy cut
short): each is reported with its path and the reason, moved aside to `checkpoints_unreadable/`
(renamed, never deleted), and the next older one is tried. A checkpoint that is readable but does
not fit the model (another architecture or shape) is not moved: that is a CheckpointError.
"""
from __future__ import annotations

import importlib
import os
import re
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from research.core.errors import CheckpointError, MissingRunError

PyTree = Any


def _ocp() -> Any:
  """orbax.checkpoint, imported on first use (0.2-0.35 s: a run that starts without checkpoints
  imports it in a thread while its train step compiles, `Checkpointer.open_in_background`)."""
  return importlib.import_module("orbax.checkpoint")


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` for (state pytree, JSON meta) pairs.

  The manager (and orbax) is opened on first use; `latest_step` answers None without it while
  the directory holds no step folder."""

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._max_to_keep, self._async_save = max_to_keep, async_save
    self._manager: Any = None
    self._lock = threading.Lock()

  @property
  def manager(self) -> Any:
    """The `ocp.CheckpointManager` of the directory (created with it)."""
    with self._lock:
      if self._manager is None:
        ocp = _ocp()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self._max_to_keep, create=True, enable_async_checkpointing=self._async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
      return self._manager

  def open_in_background(self) -> None:
    """Imports orbax and opens the manager in a thread (the first save finds it open)."""
    threading.Thread(target=lambda: self.manager, name="research-checkpointer-open", daemon=True).start()

  def latest_step(self) -> Optional[int]:
    if self._manager is None and not any(
        name.isdigit() for name in (os.listdir(self.directory) if os.path.isdir(self.directory) else ())):
      return None  # no step folder: nothing orbax would find (a temporary folder is not a checkpoint)
    return self.manager.latest_step()

  def save(self, step: int, tree: PyTree, meta: Dict[str, Any]) -> None:
    ocp = _ocp()
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, target: PyTree) -> Tuple[PyTree, Dict[str, Any]]:
    """Restores `step` into the structure, shapes, dtypes and shardings of `target`."""
    ocp = _ocp()
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta)

  def restore_latest(self, target: PyTree) -> Optional[Tuple[int, PyTree, Dict[str, Any]]]:
    """(step, tree, meta) of the newest readable checkpoint, or None if there is none at all.

    Unreadable checkpoints are logged, moved aside and skipped; if every checkpoint is unreadable,
    or one does not fit `target`'s structure and shapes, raises CheckpointError.
    """
    moved: List[str] = []
    while True:
      step = self.latest_step()
      if step is None:
        if moved:
          raise CheckpointError(
              f"no readable checkpoint in {self.directory}: every one was unreadable and was moved "
              f"aside ({', '.join(moved)}); to start over, use another --workdir")
        return None
      try:
        tree, meta = self.restore(step, target)
        return step, tree, meta
      except Exception as e:  # noqa: BLE001  (classified below; a mismatch is re-raised)
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        mismatch = self._mismatch(step, target)
        if mismatch:
          raise CheckpointError(
              f"checkpoint {os.path.join(self.directory, str(step))} does not fit this model: "
              f"{mismatch}. The config changed the model; resume with the config the run was "
              f"trained with, or use another --workdir") from None
        moved.append(self._move_aside(step, reason))

  def _mismatch(self, step: int, target: PyTree) -> Optional[str]:
    """A description of how the (readable) metadata of `step` differs from `target`, else None."""
    try:
      tree = self.manager.item_metadata(step)["state"].tree
    except Exception:  # noqa: BLE001  (unreadable metadata: the checkpoint is corrupt, not mismatched)
      return None
    stored = {k: tuple(v.shape) for k, v in _flatten(tree).items() if hasattr(v, "shape")}
    wanted = {k: tuple(v.shape) for k, v in _flatten(target).items() if hasattr(v, "shape")}
    if not stored:
      return None
    for key in sorted(set(stored) | set(wanted)):
      if key not in stored:
        return f"{key} (shape {wanted[key]}) is not in the checkpoint"
      if key not in wanted:
        return f"the checkpoint's {key} (shape {stored[key]}) is not in this model"
      if stored[key] != wanted[key]:
        return f"{key} has shape {stored[key]} in the checkpoint, {wanted[key]} in this model"
    return None

  def _move_aside(self, step: int, reason: str) -> str:
    """Renames checkpoint `step` into checkpoints_unreadable/ (process 0); returns the new path."""
    source = os.path.join(self.directory, str(step))
    aside_dir = self.directory.rstrip(os.sep) + "_unreadable"
    target = os.path.join(aside_dir, str(step))
    suffix = 1
    while os.path.exists(target):
      target = os.path.join(aside_dir, f"{step}.{suffix}")
      suffix += 1
    if jax.process_index() == 0:
      os.makedirs(aside_dir, exist_ok=True)
      os.rename(source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint_moved_aside_{step}")
    logging.warning("checkpoint %s is unreadable (%s); moved it to %s and trying the previous one",
                    source, reason, target)
    self.manager.reload()
    return target

  def wait(self) -> None:
    if self._manager is not None:
      self._manager.wait_until_finished()

  def close(self) -> None:
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()


def load_variables(path: str) -> Dict[str, PyTree]:
  """The model variables {'params': ..., 'batch_stats': ...} of another run, as numpy arrays.

  Works whatever device topology the run was saved from (restored onto one local device).

  `path`: a workdir (its latest checkpoint is used), its checkpoints/ directory, or one
  checkpoint step directory.
  """
  path = os.path.abspath(path)
  candidates = [os.path.join(path, "checkpoints"), path]
  for directory in candidates:
    if os.path.isdir(directory) and any(d.isdigit() for d in os.listdir(directory)):
      step = max(int(d) for d in os.listdir(directory) if d.isdigit())
      item = os.path.join(directory, str(step), "state")
      break
  else:
    item = os.path.join(path, "state")
    if not os.path.isdir(item):
      raise MissingRunError(f"config.init_from.workdir: no checkpoint found at {path}: train that run first")
  checkpointer = _ocp().StandardCheckpointer()
  metadata = checkpointer.metadata(item).item_metadata.tree
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata,
      is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
  state = checkpointer.restore(item, target=target)["state"]
  variables = {"params": state["params"]}
  variables.update(state.get("model_state") or {})
  return jax.tree_util.tree_map(np.asarray, variables)


def _flatten(tree: PyTree) -> Dict[str, Any]:
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    flat["/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)] = leaf
  return flat


def merge_pretrained(fresh: PyTree, pretrained: PyTree, reinit: Sequence[str] = (),
                     rename: Sequence[Tuple[str, str]] = ()) -> Tuple[PyTree, Dict[str, list]]:
  """Transfer learning: take each leaf of `fresh` from `pretrained` where the path and shape match.

  `rename` holds (regex, replacement) pairs applied in order to the pretrained '/'-joined paths
  before matching (to load a classifier into a composite model's 'backbone' scope). A renamed
  leaf with the same number of elements but another shape is reshaped (row-major): FCN's fc6
  [7, 7, 512, 4096] from VGG's classifier fc1 [25088, 4096], the paper's convolutionalization
  (VGG flattens its 7x7x512 pooled map in the same order). Leaves whose
  path matches a regex in `reinit`, that are missing from `pretrained`, or whose shape differs (a
  new classification head) keep their fresh initialization. Nothing matching at all is an error
  (a wrong workdir or a missing rename), naming a path from each side.
  Returns (merged tree, {'loaded': [...], 'reinitialized': [...]}) with '/'-joined paths.
  """
  loaded_flat, renamed = {}, set()
  for original, leaf in _flatten(pretrained).items():
    name = original
    for pattern, replacement in rename:
      name = re.sub(pattern, replacement, name)
    loaded_flat[name] = leaf
    if name != original:
      renamed.add(name)
  regexes = [re.compile(r) for r in reinit]
  report: Dict[str, list] = {"loaded": [], "reinitialized": []}

  def pick(path, leaf):
    name = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
    other = loaded_flat.get(name)
    if (other is not None and name in renamed and tuple(other.shape) != tuple(leaf.shape)
        and np.size(other) == np.size(leaf)):
      other = np.reshape(np.asarray(other), leaf.shape)
    if other is None or any(r.search(name) for r in regexes) or tuple(other.shape) != tuple(leaf.shape):
      report["reinitialized"].append(name)
      return leaf
    report["loaded"].append(name)
    return jax.numpy.asarray(other, dtype=jax.dtypes.canonicalize_dtype(leaf.dtype))

  merged = jax.tree_util.tree_map_with_path(pick, fresh)
  if not report["loaded"] and loaded_flat:
    ours = report["reinitialized"][0] if report["reinitialized"] else None
    raise ValueError(
        f"config.init_from: no parameter of the other run matches this model (e.g. theirs "
        f"{next(iter(loaded_flat))!r}, ours {ours!r}); map the paths with config.init_from.rename")
  logging.info("init_from: loaded %d arrays, kept %d fresh: %s", len(report["loaded"]),
               len(report["reinitialized"]), report["reinitialized"])
  return merged, report
