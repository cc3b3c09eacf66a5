"""XLA compiler options: those a config asks for, and those for programs that run once.

`config.compiler_options` (research.core.config) passes XLA options to the compile of the train
and evaluation programs, e.g. `xla_cpu_use_fusion_emitters=False`: XLA:CPU's elemental loop
emitters instead of its MLIR fusion emitters, which compile LeNet-5's train step in ~0.6 s
instead of ~0.9 s (the default job sets it) but ResNet-20's slower. An option this jaxlib does not
know (an unknown option fails the compile rather than being ignored) is dropped with a warning.

A program executed once (a run's initialization) is paid for by its compile time, not its speed:
on CPU it is compiled without LLVM's optimization passes (`xla_backend_optimization_level` 0)
and with the elemental emitters, which build the many small fusions of an initialization (a
threefry generator and a transform per parameter) faster. Measured on a 2-core Xeon, jax 0.10.2,
compiling the init program: LeNet-5 0.44-0.53 -> 0.26-0.27 s, ResNet-20 0.90-1.22 -> 0.76-0.83 s,
Faster R-CNN (shapes) 1.26-1.39 -> 0.91-0.92 s, GoogLeNet 4.0-4.7 -> 3.3 s, Show and Tell
1.22-1.34 -> 0.93-0.97 s, the initial values identical to the bit.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Mapping

import jax
import jax.numpy as jnp
from absl import logging

_RUN_ONCE_CPU = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def _known(options: tuple) -> bool:
  """Whether this backend's compiler accepts all of `options` ((name, value) pairs)."""
  return _probe(tuple(sorted({"xla_backend_optimization_level": 0, **dict(options)}.items())))


@functools.lru_cache(maxsize=None)
def _probe(options: tuple) -> bool:
  """Compiles a scalar negation with `options` (~20 ms; traced from a shape, so no array is made,
  whose creation would compile a program of its own). The key holds the optimization level the
  probe compiles at, so a run's train options and its run-once options (those plus level 0) share
  one probe."""
  try:
    jax.jit(jnp.negative).lower(jax.ShapeDtypeStruct((), jnp.float32)).compile(compiler_options=dict(options))
  except jax.errors.JaxRuntimeError as e:
    if "No such compile option" in str(e):
      return False
    raise
  return True


def known_options(options: Mapping[str, Any], warn: bool = True) -> Dict[str, Any]:
  """`options` less those this jaxlib does not know (each named in a warning when `warn`); one
  probe compile when all are known."""
  if not options or _known(tuple(sorted(options.items()))):
    return dict(options)
  kept = {}
  for name, value in options.items():
    if _known(((name, value),)):
      kept[name] = value
    elif warn:
      logging.warning("compiler option %s=%r is unknown to this jaxlib (jax %s): compiled without it",
                      name, value, jax.__version__)
  return kept


def run_once_options() -> Dict[str, Any]:
  """`compiler_options` for a program executed once: the module docstring's on CPU, else none."""
  if jax.default_backend() != "cpu":
    return {}
  return known_options(_RUN_ONCE_CPU, warn=False)
