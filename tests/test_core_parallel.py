"""The data-parallel step: N devices give the same update as 1 device on the same global batch."""
import jax
import numpy as np
import pytest

from research.core import parallel
from research.core.optim import build_optimizer
from research.data import datasets, pipeline
from research.tasks.classification import ClassificationTask
from tests.core_helpers import small_config


def _run_steps(task, tx, devices, batches, seed=0, steps=3):
  mesh = parallel.make_mesh(devices)
  rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  sample = parallel.to_global(batches[0], mesh)
  state = jax.jit(lambda r, b: task.create_state(task.init_variables(r, b), tx),
                  out_shardings=rep)(jax.random.PRNGKey(seed), sample)
  rng = jax.random.PRNGKey(1)

  def step(state, batch):
    return task.train_step(state, batch, jax.random.fold_in(rng, state.step))

  step = jax.jit(step, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=0)
  losses = []
  for b in batches[:steps]:
    state, metrics = step(state, parallel.to_global(b, mesh))
    losses.append(float(metrics["loss"]))
  return jax.device_get(state), losses


@pytest.mark.parametrize("model", ["lenet5", "test_bn_dropout_cnn"])
def test_eight_devices_equal_one_device(data_dir, model):
  assert jax.device_count() == 8
  config = small_config(data_dir, model=model)
  source = datasets.get_data_source("digits", "train", data_dir)
  task = ClassificationTask(config, datasets.get_builder("digits", data_dir).info)
  tx = build_optimizer(config.optimizer, 10)
  it = pipeline.train_batches(source, task.preprocess_train, 32, seed=0)
  batches = [next(it) for _ in range(3)]
  s8, l8 = _run_steps(task, tx, jax.devices(), batches)
  s1, l1 = _run_steps(task, tx, jax.devices()[:1], batches)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  flat8 = jax.tree_util.tree_leaves({"p": s8.params, "m": s8.model_state})
  flat1 = jax.tree_util.tree_leaves({"p": s1.params, "m": s1.model_state})
  for a, b in zip(flat8, flat1):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert int(s8.step) == 3
  assert l8[0] != l8[-1]


def test_batch_must_divide_over_devices():
  mesh = parallel.make_mesh()
  with pytest.raises(ValueError, match="does not divide over 8 devices"):
    parallel.local_batch_size(12, mesh)


def test_run_once_options_give_the_values_of_an_unoptimized_compile(data_dir, monkeypatch):
  """An init program compiled for compile time (research.core.compile_options) gives the values
  of an LLVM-unoptimized compile to the bit and those of a plain jit to float32 rounding; an
  option this jaxlib does not know is dropped (a warning for config.compiler_options)."""
  from research.core import compile_options
  config = small_config(data_dir, model="test_bn_dropout_cnn")
  task = ClassificationTask(config, datasets.get_builder("digits", data_dir).info)
  tx = build_optimizer(config.optimizer, 10)
  mesh = parallel.make_mesh()
  source = datasets.get_data_source("digits", "train", data_dir)
  sample = parallel.to_global(next(pipeline.train_batches(source, task.preprocess_train, 16, seed=0)), mesh)
  init = jax.jit(lambda r, b: task.create_state(task.init_variables(r, b), tx), out_shardings=parallel.replicated(mesh))
  key = jax.random.PRNGKey(3)
  run = lambda options: jax.device_get(init.lower(key, sample).compile(compiler_options=options)(key, sample))
  options = compile_options.run_once_options()
  assert options["xla_backend_optimization_level"] == 0
  got, unoptimized, optimized = run(options), run({"xla_backend_optimization_level": 0}), run({})
  jax.tree_util.tree_map(np.testing.assert_array_equal, got, unoptimized)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, optimized)
  warnings = []
  monkeypatch.setattr(compile_options.logging, "warning", lambda *args: warnings.append(args[0] % args[1:]))
  kept = compile_options.known_options({"xla_no_such_switch_for_this_test": False, **options})
  assert kept == options
  assert len(warnings) == 1 and "xla_no_such_switch_for_this_test=False is unknown to this jaxlib" in warnings[0]


def test_one_program_in_flight_on_several_cpu_devices_only():
  """The rule of research.core.parallel.one_program_in_flight: several CPU devices wait for each
  step (XLA:CPU's blocking all-reduce), one device keeps steps in flight."""
  assert parallel.one_program_in_flight(parallel.make_mesh())  # the tests' 8 simulated devices
  assert not parallel.one_program_in_flight(parallel.make_mesh(jax.devices()[:1]))
