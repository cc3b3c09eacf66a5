"""Optimizers and learning-rate schedules built from `config.optimizer`.

Config fields (all under `config.optimizer`):
  name: 'sgd' (with `momentum`, `nesterov`), 'adam', 'adamw', 'rmsprop'.
  learning_rate: peak learning rate.
  schedule: 'constant', 'cosine', 'linear' (to 0), 'poly' (lr (1 - t / T) ** `power`, DeepLab's
    'poly' policy with power 0.9) or 'step' (multiply by `decay_factor` at each of `boundaries`,
    given as fractions of the run in (0, 1)).
  warmup_steps: linear warm-up from 0 to the peak, before the schedule.
  weight_decay: for sgd/adam/rmsprop the coupled L2 term added to the gradient (as
    torch.optim.SGD's weight_decay); for adamw the decoupled decay.
  weight_decay_on: 'all' or 'kernels' (skip biases and normalization scales/offsets, i.e.
    parameters of rank < 2).
  grad_clip_norm: clip the global gradient norm to this value (0 or None: off).
  freeze: regular expressions over '/'-joined parameter paths; matching parameters get no
    update (transfer learning: freeze the backbone, train the head).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

PyTree = Any


def build_schedule(cfg: ConfigDict, num_train_steps: int) -> optax.Schedule:
  """The learning-rate schedule, a function step -> learning rate."""
  lr = float(cfg.learning_rate)
  warmup = int(cfg.get("warmup_steps", 0))
  decay_steps = max(num_train_steps - warmup, 1)
  kind = cfg.get("schedule", "constant")
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps)
  elif kind == "linear":
    main = optax.linear_schedule(lr, 0.0, decay_steps)
  elif kind == "poly":
    main = optax.polynomial_schedule(lr, 0.0, float(cfg.get("power", 0.9)), decay_steps)
  elif kind == "step":
    boundaries = cfg.get("boundaries", (0.5, 0.75))
    factor = float(cfg.get("decay_factor", 0.1))
    main = optax.piecewise_constant_schedule(
        lr, {int(b * num_train_steps) - warmup: factor for b in boundaries})
  else:
    raise ValueError(f"config.optimizer.schedule: unknown schedule {kind!r}; "
                     "known: constant, cosine, linear, poly, step")
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _path_name(path: Sequence[Any]) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _decay_mask(params: PyTree, on: str) -> PyTree:
  if on == "all":
    return jax.tree_util.tree_map(lambda _: True, params)
  if on == "kernels":
    return jax.tree_util.tree_map(lambda p: jnp.ndim(p) >= 2, params)
  raise ValueError(f"config.optimizer.weight_decay_on: unknown value {on!r}; known: all, kernels")


def frozen_mask(params: PyTree, patterns: Sequence[str]) -> PyTree:
  """A pytree of bools: True where the '/'-joined parameter path matches one of `patterns`."""
  regexes = [re.compile(p) for p in patterns]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(r.search(_path_name(path)) for r in regexes), params)


def build_optimizer(cfg: ConfigDict, num_train_steps: int) -> optax.GradientTransformation:
  """The optax transformation for `config.optimizer` (see the module docstring)."""
  schedule = build_schedule(cfg, num_train_steps)
  name = cfg.get("name", "sgd")
  wd = float(cfg.get("weight_decay", 0.0) or 0.0)
  wd_on = cfg.get("weight_decay_on", "all")
  chain = []
  clip = cfg.get("grad_clip_norm", None)
  if clip:
    chain.append(optax.clip_by_global_norm(float(clip)))
  if wd and name != "adamw":
    chain.append(optax.add_decayed_weights(wd, mask=lambda p: _decay_mask(p, wd_on)))
  if name == "sgd":
    chain.append(optax.sgd(schedule, momentum=cfg.get("momentum", 0.0) or None,
                           nesterov=bool(cfg.get("nesterov", False))))
  elif name == "adam":
    chain.append(optax.adam(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                            eps=cfg.get("eps", 1e-8)))
  elif name == "adamw":
    chain.append(optax.adamw(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                             eps=cfg.get("eps", 1e-8), weight_decay=wd,
                             mask=lambda p: _decay_mask(p, wd_on)))
  elif name == "rmsprop":
    chain.append(optax.rmsprop(schedule, decay=cfg.get("decay", 0.9), eps=cfg.get("eps", 1e-8),
                               momentum=cfg.get("momentum", 0.0) or None))
  else:
    raise ValueError(f"config.optimizer.name: unknown optimizer {name!r}; "
                     "known: sgd, adam, adamw, rmsprop")
  tx = optax.chain(*chain)
  freeze = tuple(cfg.get("freeze", ()) or ())
  if freeze:
    tx = optax.multi_transform(
        {"train": tx, "freeze": optax.set_to_zero()},
        lambda p: jax.tree_util.tree_map(lambda f: "freeze" if f else "train", frozen_mask(p, freeze)))
  return tx
