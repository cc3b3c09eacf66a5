"""The native max pool (research.models.native_cpu.max_pool / max_pool_grad, used by
research.models.pooling.max_pool for non-overlapping windows under the "native" family, f32) equals
the reshape path bit for bit, keeps lax.max's NaN and signed-zero semantics, and shards over the batch."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from research.models import cpu_dispatch
from research.models.pooling import max_pool

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not cpu_dispatch.native_module().available(),
    reason="the native kernels run on the CPU backend, when they build")


def _pool_and_grad(impl: str, window: tuple[int, int], jit: bool = True):
  """f(x, dy) -> (max_pool(x, window), its vjp at dy) under the `impl` family."""
  def f(x, dy):
    with cpu_dispatch.forced_impl(impl):
      y, vjp = jax.vjp(lambda v: max_pool(v, window), x)
      return y, vjp(dy)[0]
  return jax.jit(f) if jit else f


def _bits(a) -> np.ndarray:
  return np.asarray(a, np.float32).view(np.int32)


def _inputs(shape, window, seed, ties: bool):
  rng = np.random.default_rng(seed)
  x = rng.integers(-2, 3, shape) if ties else rng.standard_normal(shape)  # ties: most windows repeat values
  out = (shape[0], shape[1] // window[0], shape[2] // window[1], shape[3])
  return jnp.asarray(x, jnp.float32), jnp.asarray(rng.standard_normal(out), jnp.float32)


@pytest.mark.parametrize("shape,window", [((8, 28, 28, 6), (2, 2)),   # LeNet-5's first pool
                                          ((8, 10, 10, 16), (2, 2)),  # its second
                                          ((2, 8, 6, 64), (2, 2)),
                                          ((3, 9, 9, 5), (3, 3)),
                                          ((2, 7, 9, 6), (2, 2)),     # odd sides: the last row, column cropped
                                          ((2, 8, 7, 17), (3, 2)),
                                          ((4, 8, 8, 3), (2, 2)),     # few channels: mostly masked lanes
                                          ((2, 9, 13, 2), (3, 4)),
                                          ((2, 6, 6, 1), (3, 3))])
@pytest.mark.parametrize("ties", [False, True])
def test_native_max_pool_equals_the_reshape_path_bit_for_bit(shape, window, ties):
  x, dy = _inputs(shape, window, seed=sum(shape), ties=ties)
  y_ref, dx_ref = _pool_and_grad("cpu", window)(x, dy)
  y, dx = _pool_and_grad("native", window)(x, dy)
  np.testing.assert_array_equal(_bits(y), _bits(y_ref))
  np.testing.assert_array_equal(_bits(dx), _bits(dx_ref))


def test_native_path_is_taken_for_f32_only():
  x = jnp.zeros((2, 4, 4, 3), jnp.float32)
  hlo = jax.jit(jax.grad(lambda v: jnp.sum(max_pool(v, (2, 2))))).lower(x).as_text()
  assert cpu_dispatch.native_f32(jnp.float32) and "research_max_pool_grad" in hlo
  assert not cpu_dispatch.native_f32(jnp.bfloat16) and not cpu_dispatch.native_f32(jnp.float32, "cpu")
  y = max_pool(x.astype(jnp.bfloat16), (2, 2))  # the reshape path
  assert y.dtype == jnp.bfloat16 and y.shape == (2, 2, 2, 3)


def _reference(x: np.ndarray, dy: np.ndarray, window: tuple[int, int]):
  """lax.max over each window (NaN if it holds one, +0 over -0) and the first-maximum gradient
  (x == y, so a NaN window gets none), in NumPy."""
  (wh, ww), (n, h, w, c) = window, x.shape
  ho, wo = h // wh, w // ww
  windows = x[:, :ho * wh, :wo * ww].reshape(n, ho, wh, wo, ww, c).transpose(0, 1, 3, 5, 2, 4).reshape(-1, wh * ww)
  y = windows.max(axis=1)
  y[np.isnan(windows).any(axis=1)] = np.nan
  positive_zero = ((windows == 0) & ~np.signbit(windows)).any(axis=1)
  y[y == 0] = np.where(positive_zero[y == 0], np.float32(0.0), np.float32(-0.0))
  hits = windows == y[:, None]
  first = hits & (np.cumsum(hits, axis=1) == 1)
  g = np.where(first, dy.reshape(-1)[:, None], np.float32(0)).astype(np.float32)
  dx = np.zeros_like(x)
  g = g.reshape(n, ho, wo, c, wh, ww).transpose(0, 1, 4, 2, 5, 3)
  dx[:, :ho * wh, :wo * ww] = g.reshape(n, ho * wh, wo * ww, c)
  return y.reshape(n, ho, wo, c), dx


@pytest.mark.parametrize("jit", [True, False])
def test_native_max_pool_nan_and_signed_zeros(jit):
  """lax.max's semantics (in NumPy): a window holding a NaN pools to NaN and gets no gradient; a NaN
  in dy goes to the first maximum; -0 and +0 tie (the gradient goes to the first) and pool to +0.
  (The reshape path's jnp.max agrees on small arrays; on larger ones, LeNet-5's, XLA:CPU runs it on
  YNNPACK, which skips NaNs: max(NaN, 1) = 1, and -inf for a window of NaNs.)"""
  window = (2, 2)
  x, dy = _inputs((2, 6, 8, 6), window, seed=5, ties=True)
  x, dy = np.array(x), np.array(dy)
  x[0, 0, 0, 0] = np.nan                         # one NaN in a window
  x[0, 0:2, 2:4, 1] = np.nan                     # a window of NaNs
  x[1, 2:4, 0:2, 2] = [[-0.0, 0.0], [-0.0, -1]]  # signed zeros
  x[1, 2:4, 2:4, 2] = [[-0.0, -0.0], [-2, -0.0]]
  x[1, 4:6, 4:6, 3] = [[-1, np.nan], [5, 5]]
  dy[1, 0, 0, 0] = np.nan
  y, dx = _pool_and_grad("native", window, jit)(jnp.asarray(x), jnp.asarray(dy))
  y_ref, dx_ref = _reference(x, dy, window)
  np.testing.assert_array_equal(_bits(y), _bits(y_ref))
  np.testing.assert_array_equal(_bits(dx), _bits(dx_ref))
  assert np.isnan(y[0, 0, 0, 0]) and not np.asarray(dx[0, :2, :2, 0]).any()
  assert _bits(y[1, 1, 0, 2]) == 0 and _bits(y[1, 1, 1, 2]) == _bits(-0.0)  # +0 wins; all -0 stays -0
  # Without NaNs in x, the reshape path's gradient too (its forward leaves the sign of a zero
  # maximum to the reduction's order).
  x[np.isnan(x)] = 1.0
  _, dx_ref = _pool_and_grad("cpu", window)(jnp.asarray(x), jnp.asarray(dy))
  _, dx = _pool_and_grad("native", window, jit)(jnp.asarray(x), jnp.asarray(dy))
  np.testing.assert_array_equal(_bits(dx), _bits(dx_ref))


def test_lenet5_gradients_equal_the_reshape_path_bit_for_bit(monkeypatch):
  """Every parameter gradient of LeNet-5 (both pools native), the convolution biases' included: XLA
  sums those over the pool gradient's pieces, which the native path keeps (one assembled dx would
  be summed in another order)."""
  from research.models.classifiers.lenet import LeNet5
  x = jnp.asarray(np.random.default_rng(2).standard_normal((16, 28, 28, 1)), jnp.float32)
  model = LeNet5()
  params = model.init(jax.random.PRNGKey(0), x)["params"]

  def grad():  # a new function each time: traced again
    return jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, x)))))

  assert grad().lower(params).as_text().count("research_max_pool_grad") == 2
  native = grad()(params)
  monkeypatch.setattr(cpu_dispatch, "native_f32", lambda dtype, impl=None: False)  # no BatchNorm here
  assert "research_max_pool" not in grad().lower(params).as_text()
  jax.tree.map(lambda a, e: np.testing.assert_array_equal(_bits(a), _bits(e)), native, grad()(params))


def test_native_max_pool_data_parallel_equals_one_device():
  """Batch-sharded over all devices (jit with NamedSharding; shard_map): the same bits as one
  device, and the custom calls keep the batch sharded (no all-gather)."""
  devices = np.array(jax.devices())
  mesh = Mesh(devices, ("data",))
  x, _ = _inputs((2 * len(devices), 10, 10, 6), (2, 2), seed=7, ties=True)

  def grad(v):
    with cpu_dispatch.forced_impl("native"):
      return jax.value_and_grad(lambda u: jnp.sum(jnp.sin(max_pool(u, (2, 2)) * jnp.arange(6.0))))(v)[1]

  expected = jax.jit(grad)(x)
  batch = NamedSharding(mesh, P("data"))
  step = jax.jit(grad, in_shardings=batch, out_shardings=batch)
  if len(devices) > 1:
    compiled = step.lower(jax.device_put(x, batch)).compile().as_text()
    assert "research_max_pool_grad" in compiled and "all-gather" not in compiled
  mapped = jax.jit(jax.shard_map(grad, mesh=mesh, in_specs=P("data"), out_specs=P("data")))(x)
  for got in (step(jax.device_put(x, batch)), mapped):
    np.testing.assert_array_equal(_bits(got), _bits(expected))
