"""The shard_map (manual) mesh axes an array varies over, for custom gradients inside shard_map.

Inside `jax.shard_map` every value's type records the manual mesh axes it varies over; a
custom_vjp's cotangent must vary over the same axes as its primal (a replicated parameter's
gradient is the sum of every shard's). JAX keeps that set on the abstract value as `vma` (jax
0.6-0.9) or `manual_axis_type.varying` (jax 0.10-0.12); neither is in JAX's API reference, so
both are read here, in one place, and `has_varying_axes()` says whether this JAX has either.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def has_varying_axes() -> bool:
  """Whether this JAX's abstract values carry their varying manual axes (`vma` or `manual_axis_type`)."""
  aval = jax.typeof(jnp.zeros(()))
  return hasattr(aval, "vma") or hasattr(getattr(aval, "manual_axis_type", None), "varying")


def varying_axes(a: jax.Array) -> frozenset:
  """The manual mesh axes `a` varies over (empty outside shard_map, or where JAX does not say)."""
  aval = jax.typeof(a)
  if hasattr(aval, "vma"):
    return frozenset(aval.vma)
  manual = getattr(aval, "manual_axis_type", None)
  return frozenset(manual.varying) if manual is not None else frozenset()


def match_varying(cotangent: jax.Array, primal: jax.Array) -> jax.Array:
  """`cotangent` summed over the manual mesh axes it varies over and `primal` does not, as autodiff
  of the primal's computation would."""
  extra = tuple(sorted(varying_axes(cotangent) - varying_axes(primal)))
  return lax.psum(cotangent, extra) if extra else cotangent
