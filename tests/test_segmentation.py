"""Segmentation: mIoU against an independent confusion matrix, decoders, and a short training run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.models  # noqa: F401
from research.config_sections import model_config, task_config
from research.core.config import default_config
from research.core.registry import MODELS
from research.core.train import train_and_evaluate
from research.evaluation import segmentation as seg_eval
from research.tasks.segmentation import pixel_cross_entropy


def test_miou_matches_sklearn_confusion_matrix_with_ignored_pixels():
  from sklearn.metrics import confusion_matrix
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 5, (4, 16, 16))
  labels[rng.random(labels.shape) < 0.1] = 255
  preds = np.where(rng.random(labels.shape) < 0.6, np.minimum(labels, 4), rng.integers(0, 5, labels.shape))
  ours = np.asarray(seg_eval.pixel_confusion_matrix(jnp.asarray(labels), jnp.asarray(preds), 5))
  keep = labels < 5
  reference = confusion_matrix(labels[keep], preds[keep], labels=range(5))
  np.testing.assert_array_equal(ours, reference)
  diag = np.diag(reference)
  iou = diag / (reference.sum(0) + reference.sum(1) - diag)
  report = seg_eval.iou_report(ours)
  assert report["miou"] == pytest.approx(iou.mean())
  assert report["pixel_accuracy"] == pytest.approx(diag.sum() / reference.sum())


def test_pixel_cross_entropy_ignores_255_like_torch():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 3, (2, 4, 4))
  labels[0, 0, :2] = 255
  ref = torch.nn.functional.cross_entropy(torch.tensor(logits).permute(0, 3, 1, 2), torch.tensor(labels),
                                          ignore_index=255)
  assert float(pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))) == pytest.approx(float(ref), rel=1e-5)


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "unet", "deeplabv3"])
def test_decoders_output_logits_at_input_resolution(name):
  model = MODELS.build(name, num_classes=4)
  x = jnp.zeros((2, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(1)})
  assert out.shape == (2, 32, 32, 4)


def test_fcn8s_trains_on_shapes(data_dir, tmp_path):
  config = default_config()
  config.model = model_config("fcn8s")
  config.dataset.name = "shapes"
  config.dataset.eval_split = "validation"
  config.dataset.data_dir = data_dir
  config.task = task_config("segmentation")
  config.batch_size = 16
  config.eval_batch_size = 64  # 300 validation images: 4 full batches and one of 44
  config.num_train_steps = 6
  config.log_every_steps = 3
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.compilation_cache_dir = ""
  result = train_and_evaluate(config, str(tmp_path))
  assert 0.0 < result["eval/miou"] <= 1.0 and 0.0 < result["eval/pixel_accuracy"] <= 1.0
  assert "eval/iou/circle" in result
  assert (tmp_path / "eval" / "step_6" / "masks.png").exists()
  from tests.core_helpers import predict_and_inspect
  record, inspected = predict_and_inspect(str(tmp_path), str(tmp_path / "look"))
  assert sum(record["class_fractions"].values()) == pytest.approx(1.0)
  assert inspected["activations"] and not inspected.get("top_k") and "saliency.png" not in inspected["files"]


@pytest.mark.parametrize("output_stride", [8, 16])
def test_deeplabv3_dilated_backbone_reads_c5_at_the_output_stride(output_stride):
  """With dilated_backbone, ASPP reads ResNet's 'c5' (2048 channels) at stride output_stride; without,
  the undilated feature at that stride ('c3' 512 / 'c4' 1024 channels)."""
  x = jnp.zeros((1, 64, 64, 3))

  def aspp_input_channels(**kwargs):
    model = MODELS.build("deeplabv3", num_classes=3, backbone="resnet50", output_stride=output_stride,
                         aspp_features=8, **kwargs)
    variables, logits = jax.eval_shape(lambda x: model.init_with_output(jax.random.PRNGKey(0), x)[::-1], x)
    assert logits.shape == (1, 64, 64, 3)
    return variables["params"]["aspp"]["b0"]["Conv_0"]["kernel"].shape[2]

  assert aspp_input_channels(dilated_backbone=True) == 2048
  assert aspp_input_channels() == {8: 512, 16: 1024}[output_stride]
  with pytest.raises(ValueError, match="no option replace_stride_with_dilation"):
    MODELS.build("deeplabv3", backbone="small_cnn", dilated_backbone=True).init(jax.random.PRNGKey(0), x)


def test_fcn8s_voc_config_loads_vgg_classifier_into_fc6_fc7():
  """configs/fcn8s_voc2012.py's init_from.rename: VGG-16's convolutions into the backbone and its
  classifier fc1 / fc2 into fc6 / fc7, reshaped; fc7 at the centre of a 7x7 pool5 then equals the
  classifier's second hidden layer (fc6's 7x7 window covers all of pool5 there)."""
  from research.core.checkpoint import merge_pretrained
  from research.core.state import count_params
  from tests.core_helpers import project_config
  config = project_config("fcn8s_voc2012")
  full = MODELS.build("fcn8s", num_classes=21, **{k: v for k, v in config.model.items() if k != "name"})
  full_params = jax.eval_shape(full.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))["params"]
  assert 134_000_000 < count_params(full_params) < 135_000_000  # the paper's FCN-8s: ~134M

  x = jax.random.normal(jax.random.PRNGKey(0), (1, 224, 224, 3))  # pool5 is 7x7
  classifier = MODELS.build("vgg16", num_classes=5, hidden=16)
  fcn = MODELS.build("fcn8s", num_classes=3, backbone="vgg16", fc_channels=16)
  pretrained = classifier.init(jax.random.PRNGKey(1), x)
  merged, report = merge_pretrained(fcn.init(jax.random.PRNGKey(2), x), pretrained, rename=config.init_from.rename)
  assert sorted(n for n in report["reinitialized"] if "backbone" in n or "fc" in n) == []
  _, hidden = classifier.apply(pretrained, x, capture_intermediates=lambda m, _: m.name == "fc2",
                               mutable=["intermediates"])
  _, ours = fcn.apply(merged, x, capture_intermediates=lambda m, _: m.name == "fc7", mutable=["intermediates"])
  expected = jax.nn.relu(hidden["intermediates"]["classifier"]["fc2"]["__call__"][0])[0]
  np.testing.assert_allclose(jax.nn.relu(ours["intermediates"]["fc7"]["__call__"][0])[0, 3, 3], expected,
                             rtol=1e-4, atol=1e-4 * float(jnp.abs(expected).max()))
