"""One loss per task: for every head, the multi-task loss on a batch where only some examples carry
the head's labels equals the single task's own loss on exactly those examples (outputs of the
unlabeled examples are NaN, so any leak shows), for fixed and uncertainty weighting."""
import math

import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from research.config_sections import task_config
from research.data import datasets
from research.data.preprocess import Vocabulary
from research.models.multitask import HEADS
from research.tasks.captioning import CaptioningTask
from research.tasks.classification import ClassificationTask
from research.tasks.detection import LOSS_NAMES, DetectionTask
from research.tasks.multitask import MultiTaskTask
from research.tasks.segmentation import SegmentationTask
from tests.test_multitask import SHAPES_NORM, _config

N, SIZE, CLASSES, LENGTH, VOCAB = 6, 8, 4, 7, 11
HAS = {"classification": [1, 0, 1, 1, 0, 1], "detection": [0, 1, 1, 0, 1, 1],
       "segmentation": [1, 1, 0, 1, 0, 0], "captioning": [0, 0, 1, 1, 1, 0]}
WEIGHTS = {"classification": 1.0, "detection": 2.0, "segmentation": 0.5, "captioning": 1.5}
# Non-default task settings, the same for the single task and the multi-task head.
OWN = {"classification": {"label_smoothing": 0.1},
       "detection": {"loss_weights": ConfigDict({"rpn_objectness": 1.0, "rpn_box": 2.0,
                                                 "roi_classifier": 0.5, "roi_box": 1.0})},
       "segmentation": {"ignore_label": 255}, "captioning": {}}
SINGLE = {"classification": (ClassificationTask, {"name": "lenet5"}),
          "detection": (DetectionTask, {"name": "faster_rcnn", "backbone": "small_cnn"}),
          "segmentation": (SegmentationTask, {"name": "fcn8s", "backbone": "small_cnn"}),
          "captioning": (CaptioningTask, {"name": "show_tell", "backbone": "small_cnn"})}


def _head_data(rng):
  """Per head: (labels {single-task batch key: [N, ...]}, model outputs for the head)."""
  tokens = rng.integers(Vocabulary.EOS + 1, VOCAB, (N, LENGTH))
  tokens[:, 0] = Vocabulary.BOS
  tokens[:, 5:] = Vocabulary.PAD  # padding the loss must skip
  masks = rng.integers(0, CLASSES, (N, SIZE, SIZE))
  masks[:, :2] = 255  # ignored pixels
  return {
      "classification": ({"label": rng.integers(0, CLASSES, N)}, rng.normal(size=(N, CLASSES))),
      "detection": ({}, {k: rng.uniform(0.1, 2.0, N) for k in LOSS_NAMES}),
      "segmentation": ({"segmentation": masks}, rng.normal(size=(N, SIZE, SIZE, CLASSES))),
      "captioning": ({"tokens": tokens}, {"logits": rng.normal(size=(N, LENGTH - 1, VOCAB)),
                                          "features": np.zeros((N, 3))}),
  }


def _nan_where_unlabeled(tree, has):
  unlabeled = np.asarray(has) == 0
  def poison(x):
    x = np.array(x, np.float32)
    x[unlabeled] = np.nan
    return jnp.asarray(x)
  return {k: poison(v) for k, v in tree.items()} if isinstance(tree, dict) else poison(tree)


def _rows(tree, rows):
  return {k: jnp.asarray(np.asarray(v)[rows]) for k, v in tree.items()} if isinstance(tree, dict) else \
      jnp.asarray(np.asarray(tree)[rows])


@pytest.fixture(scope="module")
def tasks(data_dir):
  info = datasets.get_builder("shapes", data_dir).info
  config = _config(data_dir, loss_weighting="fixed", weights=ConfigDict(WEIGHTS))
  for head in HEADS:
    config.task[head].update(OWN[head])
  singles = {}
  for head in HEADS:
    task_cls, model = SINGLE[head]
    single = _config(data_dir)
    single.model = ConfigDict(model)
    single.task = task_config(head, **SHAPES_NORM, **OWN[head])
    singles[head] = task_cls(single, info)
  return MultiTaskTask(config, info), singles


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_every_head_of_the_multitask_loss_is_its_single_task_loss(tasks, weighting):
  joint, singles = tasks
  joint.cfg.loss_weighting = weighting
  data = _head_data(np.random.default_rng(0))
  batch = {"image": jnp.zeros((N, SIZE, SIZE, 3))}
  outputs = {"log_variance": jnp.asarray([0.3, -0.2, 0.1, 0.5])}
  for head, (labels, out) in data.items():
    batch[f"has_{head}"] = jnp.asarray(HAS[head], jnp.float32)
    batch.update({f"{head}/{k}": jnp.asarray(v) for k, v in labels.items()})
    outputs[head] = _nan_where_unlabeled(out, HAS[head])
  total, metrics = joint.loss(outputs, batch, jnp.ones(N))

  expected_total = 0.0
  for i, head in enumerate(HEADS):
    rows = np.asarray(HAS[head]) > 0
    labels, out = data[head]
    single_loss, single_metrics = singles[head].loss(
        _rows(out, rows), {"image": None, **_rows(labels, rows)}, jnp.ones(rows.sum()))
    assert math.isfinite(float(single_loss))
    np.testing.assert_allclose(metrics[f"{head}/loss"], single_loss, rtol=1e-6, err_msg=head)
    for name, value in single_metrics.items():
      np.testing.assert_allclose(metrics[f"{head}/{name}"], value, rtol=1e-6, err_msg=f"{head}/{name}")
    assert float(metrics[f"{head}/labeled"]) == pytest.approx(rows.mean())
    term = WEIGHTS[head] * float(single_loss)
    if weighting == "uncertainty":
      log_var = float(outputs["log_variance"][i])
      term = math.exp(-log_var) * term + log_var
    expected_total += term
  assert float(total) == pytest.approx(expected_total, rel=1e-5)


def test_single_task_loss_weights_examples(tasks):
  """The single task's own loss with example weights 0 drops those examples: the same as the loss
  on the kept ones alone (the weights the multi-task composition passes)."""
  _, singles = tasks
  labels, logits = _head_data(np.random.default_rng(1))["segmentation"]
  weights = np.array([1, 0, 1, 0, 1, 1], np.float32)
  rows = weights > 0
  kept, _ = singles["segmentation"].loss(jnp.asarray(logits[rows]), _rows(labels, rows), jnp.ones(rows.sum()))
  weighted, _ = singles["segmentation"].loss(jnp.asarray(logits), _rows(labels, slice(None)), jnp.asarray(weights))
  np.testing.assert_allclose(weighted, kept, rtol=1e-6)
