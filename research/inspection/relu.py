"""Which ReLUs of a forward pass output zero, and how often.

ReLUs are plain functions (jax.nn.relu / flax.linen.relu), invisible to flax's
capture_intermediates. `relu_zero_fractions` traces the function to a jaxpr, evaluates it again
equation by equation (inside one jit) and, for every top-level ReLU (a custom_jvp call whose body
is jax's `relu`), measures the fraction of its outputs that are exactly zero. Each ReLU is named by
the flax module that called it (the jaxpr's name stack without the root module, e.g.
'stage1_0/relu2') and its order within that module. ReLUs inside nested jits, scans or remat are not seen.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

import jax
import jax.numpy as jnp

try:  # jax >= 0.4.3x
  from jax.extend.core import Literal
except ImportError:  # pragma: no cover
  from jax.core import Literal


def _is_relu(eqn: Any) -> bool:
  if eqn.primitive.name != "custom_jvp_call":
    return False
  inner = eqn.params.get("call_jaxpr")
  inner = getattr(inner, "jaxpr", inner)
  eqns = getattr(inner, "eqns", ())
  return len(eqns) == 1 and eqns[0].params.get("name") == "relu"


def relu_zero_fractions(fn: Callable[..., Any], *args: Any) -> List[Dict[str, Any]]:
  """[{'name': '<module path>/relu<k>', 'shape': [...], 'zero_fraction': float}] in call order, for
  fn(*args) (module docstring)."""
  closed = jax.make_jaxpr(fn)(*args)
  jaxpr = closed.jaxpr
  relus = [e for e in jaxpr.eqns if _is_relu(e)]
  if not relus:
    return []

  def run(consts, flat):
    env: Dict[Any, Any] = {}
    read = lambda v: v.val if isinstance(v, Literal) else env[v]  # noqa: E731
    for var, value in zip(jaxpr.constvars, consts):
      env[var] = value
    for var, value in zip(jaxpr.invars, flat):
      env[var] = value
    fractions = []
    for eqn in jaxpr.eqns:
      bound = eqn.primitive.get_bind_params(eqn.params)  # jax >= 0.9: params; before: (subfuns, params)
      subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
      with eqn.ctx.manager:
        outs = eqn.primitive.bind(*subfuns, *map(read, eqn.invars), **params)
      outs = outs if eqn.primitive.multiple_results else [outs]
      for var, value in zip(eqn.outvars, outs):
        env[var] = value
      if _is_relu(eqn):
        fractions.append(jnp.mean((outs[0] == 0).astype(jnp.float32)))
    return fractions

  values = jax.jit(run)(closed.consts, jax.tree_util.tree_leaves(args))
  out, counts = [], {}
  for eqn, value in zip(relus, values):
    parts = str(eqn.source_info.name_stack).split("/")[1:]  # without the root module's class
    scope = "/".join(p for p in parts if "." not in p)  # nor method scopes ('LeNet5._act_pool')
    counts[scope] = counts.get(scope, 0) + 1
    name = f"{scope}/relu{counts[scope]}" if scope else f"relu{counts[scope]}"
    out.append({"name": name, "shape": list(eqn.outvars[0].aval.shape), "zero_fraction": float(value)})
  return out
