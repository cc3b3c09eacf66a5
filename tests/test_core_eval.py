"""Evaluation counts every example exactly once, whatever the batch size."""
import jax
import numpy as np
import pytest

from research.core.train import Trainer, _summary_line
from research.data import datasets, pipeline
from tests.core_helpers import small_config


@pytest.mark.parametrize("n,batch", [(360, 64), (37, 16), (5, 8), (64, 64)])
def test_eval_batches_cover_split_once(n, batch):
  source = [{"image": np.full((2, 2, 1), i % 256, np.uint8), "label": i} for i in range(n)]
  seen, total_mask = [], 0.0
  for b in pipeline.eval_batches(source, lambda e: {"label": np.int32(e["label"])}, batch):
    assert b["label"].shape == (batch,)
    seen.extend(b["label"][b["mask"] > 0].tolist())
    total_mask += b["mask"].sum()
  assert sorted(seen) == list(range(n))
  assert total_mask == n


def test_trainer_eval_matches_direct_computation(data_dir, tmp_path):
  config = small_config(data_dir, steps=3)
  config.eval_batch_size = 64  # 360 test examples: 5 full batches and one of 40
  trainer = Trainer(config, str(tmp_path))
  scalars, artifacts = trainer.evaluate(trainer.state)
  source = datasets.get_data_source("digits", "test", data_dir)
  examples = [trainer.task.preprocess_eval(source[i]) for i in range(len(source))]
  images = np.stack([e["image"] for e in examples])
  labels = np.array([e["label"] for e in examples])
  logits = trainer.task.model.apply(jax.device_get(trainer.state.variables), images, train=False)
  accuracy = float((np.argmax(logits, -1) == labels).mean())
  assert np.sum(artifacts["support"]) == 360
  assert scalars["accuracy"] == pytest.approx(accuracy, abs=1e-6)
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), artifacts["support"])


def test_unoptimized_init_equals_the_optimized_one(data_dir, tmp_path):
  """The initial state is compiled without LLVM's optimization passes on CPU (it runs once): its
  keys are exact and its parameters equal an optimized build's to float32 rounding."""
  trainer = Trainer(small_config(data_dir, steps=3), str(tmp_path))
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(trainer.config.seed))
  np.testing.assert_array_equal(jax.device_get(trainer.train_rng), jax.device_get(train_rng))
  expected = jax.jit(lambda r, b: trainer.task.init_variables(r, b))(init_rng, trainer.sample)
  ours = {"params": trainer.state.params, **trainer.state.model_state}
  for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_eval_log_line_shows_the_least_nested_metrics():
  assert _summary_line({"accuracy": 0.5, "loss": 1.0, "iou/cat": 0.25}) == "accuracy 0.5000, loss 1.0000"
  multitask = {"classification/accuracy": 0.9, "segmentation/mIoU": 0.8, "segmentation/iou/cat": 0.7}
  assert _summary_line(multitask) == "classification/accuracy 0.9000, segmentation/mIoU 0.8000"
  assert _summary_line({}) == ""


def test_evaluation_programs_compiled_ahead_are_not_compiled_again(data_dir, tmp_path):
  """What `_train` runs in a thread while training (Trainer._compile_eval_programs) leaves the
  evaluation nothing to compile, and the evaluation's numbers are those of a cold one."""
  config = small_config(data_dir, steps=3)
  config.eval_batch_size = 64
  cold = Trainer(config, str(tmp_path / "cold")).evaluate
  warm_trainer = Trainer(config, str(tmp_path / "warm"))
  state = warm_trainer.state
  warm_trainer._compile_eval_programs(jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding, weak_type=x.weak_type), state))
  compiles = []
  listener = lambda event, duration, **kwargs: compiles.append(event) if event.endswith("backend_compile_duration") else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    warm_scalars, _ = warm_trainer.evaluate(state)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert compiles == []
  cold_scalars, _ = cold(state)
  assert warm_scalars == pytest.approx(cold_scalars, rel=1e-6)


def test_a_run_that_evaluates_once_compiles_its_evaluation_as_run_once(data_dir, tmp_path):
  """Evaluated once at the end on a few batches (digits: 360 examples = 3 batches of 128), the
  evaluation's programs are compiled as a program executed once; evaluated during training, or
  on many batches, with the train step's options."""
  from research.core.compile_options import run_once_options
  config = small_config(data_dir, steps=8)
  config.eval_batch_size = 128
  config.eval_every_steps = 0
  assert run_once_options() and Trainer(config, str(tmp_path / "once"))._eval_compiler_options() == run_once_options()
  config.eval_every_steps = 4
  during = Trainer(config, str(tmp_path / "during"))
  assert during._eval_compiler_options() == during.compiler_options != run_once_options()
  config.eval_every_steps, config.eval_batch_size = 0, 8  # 45 batches
  many = Trainer(config, str(tmp_path / "many"))
  assert many._eval_compiler_options() == many.compiler_options
