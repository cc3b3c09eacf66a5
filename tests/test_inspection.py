"""Looking inside runs: predict on image files, research-inspect, in-step statistics, TensorBoard."""
from __future__ import annotations

import glob
import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from tests.core_helpers import small_config
from research.core import train_stats
from research.core.train import Trainer, train_and_evaluate
from research.inspection import predict
from research.inspection.images import NotAnImageError, read_image
from research.models.conv import conv2d
from research.models.pooling import max_pool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def lenet_run(data_dir, tmp_path_factory) -> str:
  """LeNet-5 trained 150 steps on digits (most test digits classified with probability >= 0.9)."""
  workdir = str(tmp_path_factory.mktemp("lenet"))
  config = small_config(data_dir, steps=150)
  config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps = 75, 0, 150
  train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def resnet_run(data_dir, tmp_path_factory) -> str:
  """ResNet-20 on digits as 32x32 RGB, trained 2 steps (BatchNorm statistics moved off 0/1)."""
  workdir = str(tmp_path_factory.mktemp("resnet20"))
  config = small_config(data_dir, steps=2, model="resnet20")
  config.task.image_size, config.task.channels = 32, 3
  config.batch_size, config.eval_batch_size = 16, 64
  config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps = 2, 0, 2
  config.monitor.grad_histograms = config.monitor.weight_histograms = False
  train_and_evaluate(config, workdir)
  return workdir


def test_predict_on_png_and_jpeg_files_gives_the_pipeline_top1(lenet_run, tmp_path):
  run = predict.Run.load(lenet_run)
  source = run.source()
  indices = list(range(48))
  pipeline_top = predict.classify(run, run.eval_batch(indices), k=1)
  confident = [i for i, top in zip(indices, pipeline_top) if top[0]["probability"] >= 0.9]
  assert len(confident) >= 20
  files = []
  for i in confident:
    digit = np.asarray(source[i]["image"])[..., 0]  # uint8 28x28 grey
    rgb = Image.fromarray(digit).convert("RGB")
    rgb.resize((61, 47), Image.BICUBIC).save(tmp_path / f"{i}_rgb.png")
    Image.fromarray(digit).resize((100, 100), Image.BICUBIC).save(tmp_path / f"{i}_grey.jpg", quality=95)
    files += [str(tmp_path / f"{i}_rgb.png"), str(tmp_path / f"{i}_grey.jpg")]
  records = predict.predict_files(run, files, str(tmp_path / "out"))
  expected = {i: top[0]["class"] for i, top in zip(indices, pipeline_top)}
  for record in records:
    index = int(os.path.basename(record["file"]).split("_")[0])
    assert record["top_k"][0]["class"] == expected[index], record
    assert len(record["top_k"]) == 5 and record["top_k"][0]["name"] == str(expected[index])
    assert os.path.exists(record["picture"])
  (tmp_path / "notes.txt").write_text("not an image")
  with pytest.raises(NotAnImageError, match="notes.txt is not an image file"):
    predict.predict_files(run, [str(tmp_path / "notes.txt")], str(tmp_path / "out"))


def test_read_image_converts_modes_and_sizes(tmp_path):
  rgba = np.zeros((10, 20, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 200, 255
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  grey16 = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)
  Image.fromarray(grey16).save(tmp_path / "b.png")
  a = read_image(str(tmp_path / "a.png"), 1, (28, 28))
  assert a.shape == (28, 28, 1) and a.dtype == np.uint8
  assert int(a[0, 0, 0]) == round(200 * 299 / 1000)  # ITU-R 601 luma of pure red
  b = read_image(str(tmp_path / "b.png"), 3, (8, 16))
  assert b.shape == (8, 16, 3) and np.all(b[..., 0] == b[..., 1]) and b.max() > 200


def _html_images(path: str) -> int:
  page = open(path).read()
  assert not re.search(r'src="(?!data:)', page)  # nothing outside the page
  return page.count('src="data:image/png;base64,')


def test_inspect_lenet5_writes_everything_and_its_activations_are_the_model_s(lenet_run, tmp_path):
  from research.cli.inspect_run import inspect_run
  out = str(tmp_path / "inspect")
  inspect_run(lenet_run, split="test", index=5, out=out)
  record = json.load(open(os.path.join(out, "inspect.json")))
  for name in record["files"]:
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  for picture in ("input.png", "top_k.png", "saliency.png", "weights.png", "relu.png", "first_conv.png"):
    assert picture in record["files"]
  assert _html_images(os.path.join(out, "index.html")) == len(record["pictures"])
  assert [s["name"] for s in record["activations"]] == ["conv1", "pool1", "conv2", "pool2"]
  assert len(record["relu"]) == 4 and len(record["weights"]) == 10 and record["batch_norm"] == []

  run = predict.Run.load(lenet_run)
  x = jnp.asarray(run.eval_batch([5], "test")["image"])
  p = run.state.params
  conv1 = conv2d(x, p["conv1"]["kernel"], 1, 2, impl="xla") + p["conv1"]["bias"]
  pool1 = jax.nn.relu(max_pool(conv1, (2, 2)))
  conv2 = conv2d(pool1, p["conv2"]["kernel"], 1, "VALID", impl="xla") + p["conv2"]["bias"]
  pool2 = jax.nn.relu(max_pool(conv2, (2, 2)))
  stored = np.load(os.path.join(out, "activations.npz"))
  for name, direct in (("conv1", conv1), ("pool1", pool1), ("conv2", conv2), ("pool2", pool2)):
    np.testing.assert_allclose(stored[name], np.asarray(direct)[0], rtol=1e-4, atol=1e-5)
  fractions = [float(np.mean(np.asarray(a) == 0)) for a in (pool1, pool2)]
  assert [r["zero_fraction"] for r in record["relu"][:2]] == pytest.approx(fractions)
  logits = run.logits(x)[0]
  assert record["top_k"][0]["class"] == int(jnp.argmax(logits))
  assert record["top_k"][0]["probability"] == pytest.approx(float(jax.nn.softmax(logits).max()), rel=1e-5)
  assert record["weights"][1]["name"] == "conv1/kernel"
  assert record["weights"][1]["l2"] == pytest.approx(float(jnp.linalg.norm(p["conv1"]["kernel"])), rel=1e-5)


def test_inspect_resnet20_activations_equal_flax_intermediates(resnet_run, tmp_path):
  from research.cli.inspect_run import inspect_run
  image = np.random.default_rng(0).integers(0, 255, (40, 30, 3), np.uint8)
  Image.fromarray(image).save(tmp_path / "photo.jpg")
  out = str(tmp_path / "inspect")
  inspect_run(resnet_run, image=str(tmp_path / "photo.jpg"), out=out)
  record = json.load(open(os.path.join(out, "inspect.json")))
  for name in record["files"]:
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  assert _html_images(os.path.join(out, "index.html")) == len(record["pictures"])
  names = [s["name"] for s in record["activations"]]
  assert len(names) == 19 and names[:3] == ["conv1", "stage1_0/conv1", "stage1_0/conv2"]
  assert names[-1] == "stage3_2/conv2"
  assert len(record["relu"]) == 19 and len(record["batch_norm"]) == 19
  assert record["first_conv"] == {"name": "conv1", "shape": [3, 3, 3, 16]}

  run = predict.Run.load(resnet_run)
  x = jnp.asarray(run.batch([run.read(str(tmp_path / "photo.jpg"))])["image"])
  variables = {"params": run.state.params, **run.state.model_state}
  _, captured = run.task.model.apply(variables, x, train=False, capture_intermediates=True)
  stored = np.load(os.path.join(out, "activations.npz"))
  for name in names:
    node = captured["intermediates"]
    for part in name.split("/"):
      node = node[part]
    np.testing.assert_allclose(stored[name], np.asarray(node["__call__"][0])[0], rtol=1e-4, atol=1e-5)
  direct = conv2d(x, run.state.params["conv1"]["kernel"], 1, 1, impl="xla")
  np.testing.assert_allclose(stored["conv1"], np.asarray(direct)[0], rtol=1e-4, atol=1e-5)
  bn = {r["name"]: r for r in record["batch_norm"]}["bn1"]
  assert bn["mean_of_var"] == pytest.approx(float(np.mean(run.state.model_state["batch_stats"]["bn1"]["var"])))


def test_in_step_gradient_norms_equal_global_norm_of_jax_grad(data_dir, tmp_path):
  trainer = Trainer(small_config(data_dir, steps=2), str(tmp_path / "run"))
  task, state, batch = trainer.task, trainer.state, trainer.sample
  rng = jax.random.PRNGKey(3)
  new_state, metrics, _ = jax.jit(lambda s, b: train_stats.train_step(task, trainer.config.monitor, s, b, rng))(
      state, batch)
  grads = jax.grad(lambda p: task.loss_fn(p, state.model_state, batch, rng)[0])(state.params)
  modules = sorted(k.split("/", 1)[1] for k in metrics if k.startswith("grad_norm/"))
  assert modules == ["conv1", "conv2", "fc1", "fc2", "fc3"]
  for m in modules:
    assert float(metrics[f"grad_norm/{m}"]) == pytest.approx(float(optax.global_norm(grads[m])), rel=1e-5)
    assert float(metrics[f"weight_norm/{m}"]) == pytest.approx(float(optax.global_norm(new_state.params[m])), rel=1e-5)
    delta = jax.tree.map(lambda a, b: a - b, new_state.params[m], state.params[m])
    ratio = float(optax.global_norm(delta)) / float(optax.global_norm(state.params[m]))
    assert float(metrics[f"update_ratio/{m}"]) == pytest.approx(ratio, rel=1e-4)
  assert train_stats.module_name("layer2_1") == "layer2" and train_stats.module_name("stage3_0") == "stage3"


def test_module_stats_reduce_each_parameter_once():
  """One reduction per parameter for all of its statistics (its new, old, update and gradient
  squares): the step compiles one kernel per parameter, not one per statistic. Also grads whose
  shapes differ from the parameters' (summed apart) and a module of zeros (update ratio 0)."""
  rng = np.random.default_rng(0)
  leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
  old = {"conv1": {"kernel": leaf(3, 3, 1, 4), "bias": leaf(4)}, "fc_0": {"kernel": leaf(5, 2)},
         "fc_1": {"kernel": jnp.zeros((2, 2))}}
  new = jax.tree.map(lambda a: a * 1.1 + 0.01, old)
  grads = jax.tree.map(lambda a: a * 0.5, old)
  jaxpr = jax.make_jaxpr(train_stats.module_stats)(old, new, grads).jaxpr
  primitives = [eqn.primitive.name for eqn in jaxpr.eqns]
  assert primitives.count("reduce") == 4 and "reduce_sum" not in primitives
  stats = train_stats.module_stats(old, new, grads)
  assert sorted(stats) == sorted(f"{s}/{m}" for s in ("weight_norm", "update_ratio", "grad_norm")
                                 for m in ("conv1", "fc"))
  for m, keys in (("conv1", [("conv1",)]), ("fc", [("fc_0",), ("fc_1",)])):
    pick = lambda tree: [tree[k[0]] for k in keys]  # noqa: E731
    delta = jax.tree.map(lambda a, b: a - b, pick(new), pick(old))
    assert float(stats[f"weight_norm/{m}"]) == pytest.approx(float(optax.global_norm(pick(new))), rel=1e-6)
    assert float(stats[f"grad_norm/{m}"]) == pytest.approx(float(optax.global_norm(pick(grads))), rel=1e-6)
    assert float(stats[f"update_ratio/{m}"]) == pytest.approx(
        float(optax.global_norm(delta)) / float(optax.global_norm(pick(old))), rel=1e-6)
  flat_grads = {"conv1": jnp.ones(40), "fc": jnp.ones(11)}  # another structure: summed on their own
  stats = train_stats.module_stats(old, new, flat_grads)
  assert float(stats["grad_norm/conv1"]) == pytest.approx(40 ** 0.5)
  assert float(stats["grad_norm/fc"]) == pytest.approx(11 ** 0.5)
  zero = {"w": jnp.zeros((2, 2))}
  assert float(train_stats.module_stats(zero, zero, None)["update_ratio/w"]) == 0.0


def test_two_trial_sweep_writes_histograms_confusion_matrix_and_hparams(data_dir, tmp_path):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  from research.sweeps import Experiment, grid
  from research.sweeps.local import LocalRunner, SweepDir
  experiment = Experiment(
      name="tb", config=os.path.join(ROOT, "configs", "lenet5_digits.py"),
      overrides={"num_train_steps": 4, "batch_size": 32, "log_every_steps": 2, "eval_every_steps": 4,
                 "checkpoint_every_steps": 4, "dataset.data_dir": data_dir, "compilation_cache_dir": ""},
      sweep=[grid("optimizer.learning_rate", [0.01, 0.05])])
  trials = experiment.expand()
  sweep = SweepDir(str(tmp_path / "sweep"))
  sweep.register(experiment, trials)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([ROOT] + sys.path))
  results = LocalRunner(sweep, experiment.config_path, parallel=2, env=env, log=lambda line: None).run_all(trials)
  assert [r.status for r in results] == ["done", "done"], [r.log_tail for r in results]
  for trial in trials:
    board = os.path.join(sweep.workdir(trial), "tensorboard")
    events = EventAccumulator(board, size_guidance={"histograms": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"weights/conv1/kernel", "gradients/conv1/kernel", "weights/fc3/bias"} <= set(tags["histograms"])
    assert "eval/confusion_matrix" in tags["images"]
    assert "train/grad_norm/conv1" in tags["scalars"] and "train/update_ratio/fc3" in tags["scalars"]
    assert any(t.startswith("config") for t in tags["tensors"])  # the config as text
    hist = events.Histograms("gradients/conv1/kernel")
    assert [h.step for h in hist] == [4] and hist[0].histogram_value.num == 150
    image = events.Images("eval/confusion_matrix")[0]
    assert image.step == 4 and image.width > 100
    hparams = EventAccumulator(os.path.join(board, "hparams"))
    hparams.Reload()
    plugin = hparams.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(plugin)
    from tensorboard.plugins.hparams import plugin_data_pb2
    start = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["optimizer.learning_rate"].number_value == pytest.approx(
        trial.swept["optimizer.learning_rate"])
    assert "eval/accuracy" in hparams.Tags()["scalars"]
  assert len(glob.glob(str(tmp_path / "sweep" / "trials" / "*" / "eval" / "step_4" / "confusion_matrix.png"))) == 2
