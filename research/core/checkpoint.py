"""Checkpoints with orbax: periodic, keep-last-N, atomic, optionally async.

Layout: WORKDIR/checkpoints/<step>/{state, meta}. `state` holds the TrainState and the train-metric
accumulators (so the first log after a resume averages over the same steps as an uninterrupted
run); `meta` is JSON: the step and the data position (index of the next training batch). orbax
writes each checkpoint to a temporary directory and renames it when complete, so a run killed at
any moment leaves only whole checkpoints behind.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

PyTree = Any


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` for (state pytree, JSON meta) pairs."""

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, tree: PyTree, meta: Dict[str, Any]) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, target: PyTree) -> Tuple[PyTree, Dict[str, Any]]:
    """Restores `step` into the structure, shapes, dtypes and shardings of `target`."""
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


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
      raise FileNotFoundError(f"config.init_from.workdir: no checkpoint found at {path}")
  checkpointer = ocp.StandardCheckpointer()
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
