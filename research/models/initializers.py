"""Kernel initializers by name, so configs can pick them: `config.model.kernel_init = "normal:0.05"`.

A model's `kernel_init` is one spec for all its convolution and dense kernels, or "CONV,DENSE":
two specs, the first for convolutions, the second for dense layers (`kernel_initializers`), e.g.
"he_normal,normal:0.01", what torchvision's VGG does.

Specs (`get_initializer(spec)` -> a flax initializer `init(key, shape, dtype)`). Fans are those of
torch.nn.init: for a conv kernel [kh, kw, C_in / groups, C_out] (HWIO), fan_in = kh kw C_in / groups
and fan_out = kh kw C_out; for a dense kernel [in, out], fan_in = in and fan_out = out.

  normal:STD                      N(0, STD^2), untruncated (torch.nn.init.normal_(std=STD)).
  xavier_uniform, glorot_uniform  U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
  xavier_normal, glorot_normal    N(0, 2 / (fan_in + fan_out)), untruncated (torch's xavier_normal_).
  he_normal, kaiming_normal       N(0, 2 / fan_out), untruncated: torch's kaiming_normal_(mode='fan_out',
                                  nonlinearity='relu'), what torchvision's ResNets and VGGs use.
  he_uniform, kaiming_uniform     U(-a, a), a = sqrt(6 / fan_out) (same fan_out mode as he_normal).
  lecun_normal                    flax's default: variance 1 / fan_in, truncated at 2 std and
                                  rescaled to keep that variance (jax.nn.initializers.lecun_normal).
  torch_default                   What torch.nn.Conv2d / Linear do to their weights:
                                  kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import jax.numpy as jnp
from flax import linen as nn

Initializer = Callable[..., jnp.ndarray]

_vs = nn.initializers.variance_scaling
_NAMED: Dict[str, Callable[[], Initializer]] = {
    "xavier_uniform": lambda: _vs(1.0, "fan_avg", "uniform"),
    "glorot_uniform": lambda: _vs(1.0, "fan_avg", "uniform"),
    "xavier_normal": lambda: _vs(1.0, "fan_avg", "normal"),
    "glorot_normal": lambda: _vs(1.0, "fan_avg", "normal"),
    "he_normal": lambda: _vs(2.0, "fan_out", "normal"),
    "kaiming_normal": lambda: _vs(2.0, "fan_out", "normal"),
    "he_uniform": lambda: _vs(2.0, "fan_out", "uniform"),
    "kaiming_uniform": lambda: _vs(2.0, "fan_out", "uniform"),
    "lecun_normal": nn.initializers.lecun_normal,
    "torch_default": lambda: _vs(1.0 / 3.0, "fan_in", "uniform"),
}
_PARAMETRIZED = ("normal:STD",)
KNOWN_SPECS = tuple(sorted(_NAMED)) + _PARAMETRIZED


def _std(spec: str, arg: str) -> float:
  try:
    std = float(arg)
  except ValueError:
    std = float("nan")
  if not std >= 0:  # Also rejects NaN.
    raise ValueError(f"kernel initializer {spec!r}: 'normal:STD' needs a non-negative number STD")
  return std


def get_initializer(spec: str) -> Initializer:
  """The flax initializer named by `spec` (see the module docstring); ValueError names an unknown spec."""
  name, colon, arg = spec.partition(":")
  if name == "normal" and colon:
    return nn.initializers.normal(_std(spec, arg))
  if name in _NAMED and not colon:
    return _NAMED[name]()
  raise ValueError(f"unknown kernel initializer {spec!r}; known: {', '.join(KNOWN_SPECS)}")


def kernel_initializers(spec: str) -> Tuple[Initializer, Initializer]:
  """(convolution, dense) kernel initializers from "SPEC" (both) or "CONV_SPEC,DENSE_SPEC"."""
  conv, comma, dense = spec.partition(",")
  if comma and not dense:
    raise ValueError(f"kernel initializer {spec!r}: expected 'SPEC' or 'CONV_SPEC,DENSE_SPEC'")
  return get_initializer(conv), get_initializer(dense or conv)
