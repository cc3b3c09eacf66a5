"""research.models.norm.BatchNorm equals flax.linen.BatchNorm: outputs, running statistics and
gradients, on the native-kernel path and the plain-jnp path, in training and evaluation."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from research.models import cpu_dispatch
from research.models.norm import BatchNorm

# The native channel sums run on the CPU backend only; elsewhere the jnp path is the one to test.
IMPLS = ["native", "xla"] if jax.default_backend() == "cpu" else ["xla"]

_KWARGS = dict(momentum=0.9, epsilon=1e-5)


def _perturbed_variables(module: nn.Module, x: jnp.ndarray, seed: int) -> dict:
  """The module's variables, moved away from their init (so scale and running stats matter)."""
  rng = np.random.default_rng(seed)
  variables = module.init(jax.random.key(0), x, use_running_average=False)
  return jax.tree.map(lambda a: a + 0.2 * jnp.asarray(rng.standard_normal(a.shape), a.dtype), variables)


def _loss_and_grads(module: nn.Module, variables: dict, x: jnp.ndarray, train: bool):
  """(loss, (y, updated batch_stats), (dL/dparams, dL/dx)) for L = sum(sin(y) * channel index)."""
  def loss(params, x_):
    y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x_,
                              use_running_average=not train, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y.astype(jnp.float32)) * jnp.arange(y.shape[-1])), (y, updates)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(variables["params"], x)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(8, 5, 6, 20), (12, 24)])
def test_matches_flax_batch_norm(monkeypatch, impl, dtype, train, shape):
  monkeypatch.setenv(cpu_dispatch.IMPL_ENV_VAR, impl)
  x = jnp.asarray(3 * np.random.default_rng(1).standard_normal(shape) + 1, dtype)
  reference, ours = nn.BatchNorm(dtype=dtype, **_KWARGS), BatchNorm(dtype=dtype, **_KWARGS)
  variables = _perturbed_variables(reference, x, seed=2)
  ours_variables = ours.init(jax.random.key(0), x, use_running_average=False)
  assert jax.tree.map(jnp.shape, ours_variables) == jax.tree.map(jnp.shape, variables)
  (_, (y_ref, stats_ref)), grads_ref = _loss_and_grads(reference, variables, x, train)
  (_, (y, stats)), grads = _loss_and_grads(ours, variables, x, train)
  assert y.dtype == y_ref.dtype == dtype
  tol = 1e-5 if dtype == jnp.float32 else 1e-2

  def close(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())

  jax.tree.map(close, (y, stats, grads), (y_ref, stats_ref, grads_ref))


def test_without_scale_and_bias_has_no_params():
  x = jnp.ones((4, 3, 3, 8))
  variables = BatchNorm(use_scale=False, use_bias=False, use_running_average=False).init(jax.random.key(0), x)
  assert "params" not in variables and set(variables["batch_stats"]) == {"mean", "var"}


@pytest.mark.parametrize("impl", IMPLS)
def test_data_parallel_equals_one_device(monkeypatch, impl):
  """Batch statistics and gradients over the global batch, with the batch sharded over all devices."""
  monkeypatch.setenv(cpu_dispatch.IMPL_ENV_VAR, impl)
  devices = np.array(jax.devices())
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2 * len(devices), 4, 4, 16)) + 0.5, jnp.float32)
  module = BatchNorm(**_KWARGS)
  variables = _perturbed_variables(module, x, seed=4)

  def step(params, x_):
    def loss(p):
      y, updates = module.apply({"params": p, "batch_stats": variables["batch_stats"]}, x_,
                                use_running_average=False, mutable=["batch_stats"])
      return jnp.sum(jnp.cos(y)), updates
    return jax.grad(loss, has_aux=True)(params)

  expected = jax.jit(step)(variables["params"], x)
  mesh = Mesh(devices, ("data",))
  sharded = jax.jit(step, in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))))(
      variables["params"], jax.device_put(x, NamedSharding(mesh, P("data"))))
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5), sharded, expected)
