"""The train state: everything that changes during training, as one pytree."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax

from research.core import train_stats

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Parameters, non-trainable model state, optimizer state and the step counter.

  Attributes:
    step: int32 scalar, the number of optimizer updates applied so far. It is also the
      index of the next training batch (the data position) and the RNG stream position.
    params: the trainable parameters ('params' collection).
    model_state: the other mutable collections, e.g. {'batch_stats': ...}; {} if none.
    opt_state: optax state for `tx`.
    tx: the optax transformation (static, not saved).
  """

  step: jax.Array
  params: PyTree
  model_state: PyTree
  opt_state: PyTree
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params: PyTree, model_state: PyTree, tx: optax.GradientTransformation) -> "TrainState":
    return cls(step=jax.numpy.zeros((), jax.numpy.int32), params=params, model_state=model_state,
               opt_state=tx.init(params), tx=tx)

  def apply_gradients(self, grads: PyTree, model_state: PyTree) -> "TrainState":
    """One optimizer update; `model_state` replaces the old one (e.g. new BN statistics)."""
    train_stats.record_gradients(grads)
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, model_state=model_state, opt_state=opt_state)

  @property
  def variables(self) -> dict:
    """The variables dict for `model.apply`: {'params': ..., **model_state}."""
    return {"params": self.params, **self.model_state}


def count_params(params: PyTree) -> int:
  """Number of scalar parameters in a pytree of arrays (or ShapeDtypeStructs)."""
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
