"""What a run shows of its insides while it trains: per-module norms in the step, histograms.

Switches: config.monitor (research.core.config.default_config); none changes the update.

* `train_step(...)` wraps a task's `train_step` and adds, per top-level module, to the step's
  metrics (averaged over the log interval like every train metric):
    weight_norm/<module>   L2 norm of the module's parameters after the update,
    grad_norm/<module>     L2 norm of the gradient the optimizer received,
    update_ratio/<module>  ||w_after - w_before|| / ||w_before|| (0 where the weights are 0).
  A module is a first-level name of the parameter tree with a trailing `_<digits>` dropped, so the
  blocks of a stage group together (`layer2_0`, `layer2_1` -> `layer2`; `stage1_2` -> `stage1`).
  The gradients are the ones `TrainState.apply_gradients` receives while the step is traced (a
  trace-time record, `GradientTap`); a task that updates its state otherwise (GANs, two
  optimizers) gets weight norms and update ratios only.
* `histograms(...)`: weights (and gradients of one step) as name -> array for
  `MetricWriter.write_histograms`.
"""
from __future__ import annotations

import re
import threading
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

PyTree = Any

_TAPS = threading.local()


class GradientTap:
  """While active (a `with` block around tracing a step), records the gradient trees passed to
  `TrainState.apply_gradients`; `grads` is the tree when exactly one update happened, else None."""

  def __enter__(self) -> "GradientTap":
    self._seen: List[PyTree] = []
    stack = getattr(_TAPS, "stack", None)
    if stack is None:
      stack = _TAPS.stack = []
    stack.append(self)
    return self

  def __exit__(self, *exc) -> None:
    _TAPS.stack.pop()

  @property
  def grads(self) -> Optional[PyTree]:
    return self._seen[0] if len(self._seen) == 1 else None


def record_gradients(grads: PyTree) -> None:
  """Called by TrainState.apply_gradients: hands `grads` to the innermost active tap, if any."""
  stack = getattr(_TAPS, "stack", None)
  if stack:
    stack[-1]._seen.append(grads)


def module_name(key: str) -> str:
  """The top-level module a first-level parameter name belongs to ('layer2_1' -> 'layer2')."""
  return re.sub(r"_\d+$", "", str(key))


def _by_module(tree: PyTree) -> Dict[str, List[jax.Array]]:
  groups: Dict[str, List[jax.Array]] = {}
  if not isinstance(tree, dict):
    return {"all": jax.tree_util.tree_leaves(tree)}
  for key in tree:
    groups.setdefault(module_name(key), []).extend(jax.tree_util.tree_leaves(tree[key]))
  return groups


def _squares_summed(arrays: List[jax.Array]) -> Tuple[jax.Array, ...]:
  """(sum(a ** 2) for a in `arrays`), float32 scalars, for arrays of one shape: one variadic
  reduction, so one kernel for all of them (separate sums compiled a reduction each, and XLA:CPU
  splits each long one in two: ResNet-20's step 796 -> 598 operations, LeNet-5's 163 -> 135)."""
  squares = tuple(jnp.square(a.astype(jnp.float32)).ravel() for a in arrays)
  zeros = tuple(jnp.zeros((), jnp.float32) for _ in arrays)
  return jax.lax.reduce(squares, zeros, lambda x, y: tuple(p + q for p, q in zip(x, y)), (0,))


def module_stats(old_params: PyTree, new_params: PyTree, grads: Optional[PyTree]) -> Dict[str, jax.Array]:
  """{'weight_norm/<m>', 'update_ratio/<m>', and with grads 'grad_norm/<m>'}: float32 scalars.

  Each parameter's squared norms (new, old, the update new - old and, where its gradient has its
  shape, the gradient) come from one reduction over it (`_squares_summed`)."""
  old, new = _by_module(old_params), _by_module(new_params)
  grad_groups = _by_module(grads) if grads is not None else {}
  out: Dict[str, jax.Array] = {}
  for m in new:
    has_grads = m in grad_groups
    grad_leaves = grad_groups.pop(m, [])
    fused = len(grad_leaves) == len(new[m]) and all(g.shape == a.shape for g, a in zip(grad_leaves, new[m]))
    new_sq = old_sq = delta_sq = grad_sq = jnp.zeros((), jnp.float32)
    for i, (a, b) in enumerate(zip(new[m], old[m])):
      arrays = [a, b, a.astype(jnp.float32) - b.astype(jnp.float32)] + ([grad_leaves[i]] if fused else [])
      sums = _squares_summed(arrays)
      new_sq, old_sq, delta_sq = new_sq + sums[0], old_sq + sums[1], delta_sq + sums[2]
      if fused:
        grad_sq = grad_sq + sums[3]
    if grad_leaves and not fused:
      for g in grad_leaves:
        grad_sq = grad_sq + _squares_summed([g])[0]
    old_norm = jnp.sqrt(old_sq)
    out[f"weight_norm/{m}"] = jnp.sqrt(new_sq)
    out[f"update_ratio/{m}"] = jnp.where(old_norm > 0, jnp.sqrt(delta_sq) / jnp.maximum(old_norm, 1e-30), 0.0)
    if has_grads:
      out[f"grad_norm/{m}"] = jnp.sqrt(grad_sq)
  for m, leaves in grad_groups.items():  # gradients of modules without parameters here (none in practice)
    out[f"grad_norm/{m}"] = jnp.sqrt(sum(_squares_summed([g])[0] for g in leaves))
  return out


def train_step(task: Any, monitor: ConfigDict, state: Any, batch: PyTree, rng: jax.Array
               ) -> Tuple[Any, Dict[str, jax.Array], Optional[PyTree]]:
  """(new state, metrics, gradients or None): `task.train_step` plus, with
  monitor.module_stats, the per-module statistics in the metrics."""
  with GradientTap() as tap:
    new_state, metrics = task.train_step(state, batch, rng)
  if monitor.module_stats:
    metrics = {**metrics, **module_stats(state.params, new_state.params, tap.grads)}
  return new_state, metrics, tap.grads


def _flat(tree: PyTree) -> Dict[str, np.ndarray]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(v) for path, v in flat}


def histograms(params: Optional[PyTree], grads: Optional[PyTree]) -> Dict[str, np.ndarray]:
  """Host arrays by TensorBoard tag: 'weights/<param path>' and 'gradients/<param path>'."""
  out: Dict[str, np.ndarray] = {}
  if params is not None:
    out.update({f"weights/{k}": v for k, v in _flat(params).items()})
  if grads is not None:
    out.update({f"gradients/{k}": v for k, v in _flat(grads).items()})
  return out
