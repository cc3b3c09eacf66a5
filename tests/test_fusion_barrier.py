"""research.models.fusion_barrier.relu_barrier: relu's values and gradients through an aliasing FFI
store on the native CPU path only, sharded over the batch; and what it is for: XLA no longer
recomputes a residual stream's elementwise chain inside every consumer."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import research.models  # noqa: F401
from research.core.registry import MODELS
from research.models import cpu_dispatch
from research.models.fusion_barrier import relu_barrier

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not cpu_dispatch.native_module().available(),
    reason="the native kernels run on the CPU backend, when they build")


def _bits(a) -> np.ndarray:
  return np.asarray(a, np.float32).view(np.int32)


def _residual_chain(relu):
  """Three 'blocks' x <- relu(x * w_k + sin(x)), and a loss."""
  def loss(x, w):
    for k in range(3):
      x = relu(x * w[k] + jnp.sin(x))
    return jnp.sum(x * x)
  return loss


@pytest.mark.parametrize("impl", ["native", "xla"])
def test_values_and_gradients_equal_relu(impl):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((4, 6, 6, 8)), jnp.float32)
  w = jnp.asarray(rng.standard_normal(3), jnp.float32)
  with cpu_dispatch.forced_impl(impl):
    got = jax.jit(jax.value_and_grad(_residual_chain(relu_barrier), argnums=(0, 1)))(x, w)
  want = jax.jit(jax.value_and_grad(_residual_chain(jax.nn.relu), argnums=(0, 1)))(x, w)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), got, want)


def test_gradient_at_zero_nan_and_infinities_equals_relu_bit_for_bit():
  x = jnp.asarray([-1.0, -0.0, 0.0, 2.0, jnp.nan, -jnp.inf, jnp.inf], jnp.float32)
  g = jnp.arange(1.0, 8.0, dtype=jnp.float32)
  with cpu_dispatch.forced_impl("native"):
    y, vjp = jax.vjp(relu_barrier, x)
    dx = vjp(g)[0]
  y_ref, vjp_ref = jax.vjp(jax.nn.relu, x)
  np.testing.assert_array_equal(_bits(y), _bits(y_ref))
  np.testing.assert_array_equal(_bits(dx), _bits(vjp_ref(g)[0]))


def test_native_f32_only_and_the_store_aliases_its_operand():
  x = jnp.ones((2, 3, 3, 4), jnp.float32)

  def grad():  # a new function each time: jit's trace cache does not see forced_impl
    return jax.jit(jax.value_and_grad(lambda v: jnp.sum(relu_barrier(relu_barrier(v * 2.0) - 1.0))))

  with cpu_dispatch.forced_impl("native"):
    compiled = grad().lower(x).compile().as_text()
    assert "research_store" not in grad().lower(x.astype(jnp.bfloat16)).as_text()
  assert compiled.count('custom_call_target="research_store"') == 2
  assert "output_to_operand_aliasing" in compiled
  for impl in ("xla", "cpu"):
    with cpu_dispatch.forced_impl(impl):
      assert "research_store" not in grad().lower(x).as_text()


def test_data_parallel_equals_one_device():
  """Batch-sharded over all devices (jit with NamedSharding; shard_map): the same bits as one
  device, and the store keeps the batch sharded (no all-gather)."""
  devices = np.array(jax.devices())
  mesh = Mesh(devices, ("data",))
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2 * len(devices), 5, 5, 3)), jnp.float32)

  def grad(v):
    with cpu_dispatch.forced_impl("native"):
      return jax.grad(lambda u: jnp.sum(jnp.cos(relu_barrier(relu_barrier(u * 3.0) + u))))(v)

  expected = jax.jit(grad)(x)
  batch = NamedSharding(mesh, P("data"))
  step = jax.jit(grad, in_shardings=batch, out_shardings=batch)
  if len(devices) > 1:
    compiled = step.lower(jax.device_put(x, batch)).compile().as_text()
    assert "research_store" in compiled and "all-gather" not in compiled
  mapped = jax.jit(jax.shard_map(grad, mesh=mesh, in_specs=P("data"), out_specs=P("data")))(x)
  for got in (step(jax.device_put(x, batch)), mapped):
    np.testing.assert_array_equal(_bits(got), _bits(expected))


def _most_activations_one_fusion_reads(hlo: str, shape: str) -> int:
  """The most operands of type `shape` (e.g. 'f32[2,8,8,16]') any fusion of the entry computation takes."""
  entry = hlo[hlo.index("\nENTRY"):]
  types = dict(re.findall(r"%([\w.\-]+) = (\w+\[[\d,]*\])", entry))
  most = 0
  for operands in re.findall(r"= \S+ fusion\((.*?)\), kind=", entry):
    names = re.findall(r"%([\w.\-]+)", operands)
    most = max(most, sum(types.get(name) == shape for name in names))
  return most


def test_a_resnet_stage_is_not_recomputed_in_its_consumers():
  """ResNet-32's first stage (five blocks at 16 channels), training step: with the stored block
  outputs no fusion reads more than four activations (4 with jax 0.10); the plain relu lets XLA fuse
  the stream back towards the stage's start into later consumers (7)."""
  model = MODELS.build("resnet32", num_classes=10)
  x = jnp.zeros((2, 8, 8, 3), jnp.float32)

  def most(relu):
    import research.models.classifiers.resnet as resnet
    saved = resnet.relu_barrier
    resnet.relu_barrier = relu
    try:
      with cpu_dispatch.forced_impl("native"):
        variables = model.init(jax.random.PRNGKey(0), x)
        def loss(params):
          logits, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
          return jnp.sum(logits)
        hlo = jax.jit(jax.grad(loss)).lower(variables["params"]).compile().as_text()
    finally:
      resnet.relu_barrier = saved
    return _most_activations_one_fusion_reads(hlo, "f32[2,8,8,16]")

  stored, plain = most(relu_barrier), most(jax.nn.relu)
  assert stored <= 4 < plain, (stored, plain)
