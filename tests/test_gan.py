"""GAN task: one step updates both networks, 8 devices equal 1 device, Fréchet distance."""
import jax
import numpy as np
import pytest
from PIL import Image
import scipy.linalg

import research.models  # noqa: F401
from research.core import parallel
from research.config_sections import model_config, task_config
from research.core.config import default_config
from research.core.registry import MODELS
from research.core.train import train_and_evaluate
from research.data import datasets, pipeline
from research.evaluation.gan import frechet_distance
from research.tasks.gan import GANTask


def _config(data_dir, classifier=""):
  config = default_config()
  config.model.name = "dcgan"
  config.model.generator = model_config("dcgan_generator", image_size=28, channels=1, base_features=8)
  config.model.discriminator = model_config("dcgan_discriminator", image_size=28, base_features=8)
  config.dataset.name = "digits"
  config.dataset.data_dir = data_dir
  config.task = task_config("gan", z_dim=16, classifier_workdir=classifier, feature_layer="fc2" if classifier else "")
  config.batch_size = 16
  config.eval_batch_size = 120
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.compilation_cache_dir = ""
  return config


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3)])
def test_dcgan_shapes(size, channels):
  g = MODELS.build("dcgan_generator", image_size=size, channels=channels, base_features=8)
  d = MODELS.build("dcgan_discriminator", image_size=size, base_features=8)
  z = jax.ShapeDtypeStruct((2, 10), np.float32)
  images = jax.eval_shape(lambda z: g.apply(g.init(jax.random.PRNGKey(0), z), z), z)
  assert images.shape == (2, size, size, channels)
  logits = jax.eval_shape(lambda x: d.apply(d.init(jax.random.PRNGKey(1), x), x), images)
  assert logits.shape == (2,)


def _steps(task, devices, batches):
  mesh = parallel.make_mesh(devices)
  rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  sample = parallel.to_global(batches[0], mesh)
  state = jax.jit(lambda r, b: task.create_state(task.init_variables(r, b), None), out_shardings=rep)(
      jax.random.PRNGKey(0), sample)
  initial = jax.device_get(state.params)
  step = jax.jit(lambda s, b: task.train_step(s, b, jax.random.fold_in(jax.random.PRNGKey(1), s.step)),
                 in_shardings=(rep, data), out_shardings=(rep, rep))
  for b in batches:
    state, metrics = step(state, parallel.to_global(b, mesh))
  return initial, jax.device_get(state), jax.device_get(metrics)


def test_one_step_updates_both_networks_and_8_devices_equal_1(data_dir):
  config = _config(data_dir)
  task = GANTask(config, datasets.get_builder("digits", data_dir).info)
  source = datasets.get_data_source("digits", "train", data_dir)
  it = pipeline.train_batches(source, task.preprocess_train, 16, seed=0)
  batches = [next(it) for _ in range(2)]
  initial, s8, m8 = _steps(task, jax.devices(), batches)
  _, s1, m1 = _steps(task, jax.devices()[:1], batches)
  for part in ("generator", "discriminator"):
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(initial[part]),
                                                  jax.tree_util.tree_leaves(s8.params[part]))]
    assert all(moved), part
  for a, b in zip(jax.tree_util.tree_leaves(s8.params), jax.tree_util.tree_leaves(s1.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m8["d_loss"], m1["d_loss"], rtol=1e-5)


def test_frechet_distance_matches_formula():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(200, 4)), rng.normal(0.5, 2.0, size=(300, 4))
  mu1, mu2, c1, c2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
  assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-6)
  assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-6)


def test_gan_run_with_classifier_features(data_dir, tmp_path):
  from tests.core_helpers import small_config
  classifier = str(tmp_path / "classifier")
  train_and_evaluate(small_config(data_dir, steps=2), classifier)
  result = train_and_evaluate(_config(data_dir, classifier), str(tmp_path / "gan"))
  for key in ("eval/frechet_distance", "eval/classifier_confidence", "eval/d_accuracy_real",
              "eval/diversity_ratio"):
    assert np.isfinite(result[key]), key
  assert (tmp_path / "gan" / "eval" / "step_4" / "samples.png").exists()
  # research-predict on a GAN run: image files are not needed; it writes the generator's samples.
  from research.inspection import predict
  run = predict.Run.load(str(tmp_path / "gan"))
  [record] = predict.predict_files(run, [], str(tmp_path / "predict"))
  samples = np.asarray(Image.open(record["samples"]))
  assert record["task"] == "gan" and samples.ndim == 3 and samples.std() > 0
  assert predict.summary_line(record) == f"GAN samples: {record['samples']}"
