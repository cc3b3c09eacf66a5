"""Multi-task model and task: dataset mixtures, masked losses (a head without labels gets exactly
zero gradient), Kendall et al.'s uncertainty weighting, 8 devices equal 1, per-head metrics through
the core, predict and inspect on a trained joint run, and transfer between single-task runs and the
joint model."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

import research.models  # noqa: F401
from research.core.checkpoint import Checkpointer, load_variables, merge_pretrained
from research.config_sections import model_config, task_config
from research.core.config import default_config
from research.core.metrics import read_metrics
from research.core.optim import build_optimizer
from research.core.registry import MODELS
from research.core.train import train_and_evaluate
from research.data import datasets, mixture, pipeline
from research.models.multitask import HEADS, RENAME_FROM_JOINT, RENAME_INTO_JOINT, MultiTaskModel
from research.tasks.detection import DetectionTask
from research.tasks.multitask import MultiTaskTask
from research.tasks.segmentation import SegmentationTask
from research.inspection.predict import summary_line as predict_summary
from tests.core_helpers import predict_and_inspect
from tests.test_core_parallel import _run_steps

WIDTHS = (8, 8, 16, 16, 16)
DETECTION = dict(feature_levels=("c2", "c3", "c4"), fpn_channels=8, anchor_sizes=((12,), (24,), (48,)),
                 rpn_pre_nms_top_n_train=64, rpn_post_nms_top_n_train=16, rpn_pre_nms_top_n_test=32,
                 rpn_post_nms_top_n_test=8, rpn_batch_size_per_image=32, box_batch_size_per_image=16,
                 canonical_scale=16.0, canonical_level=3, box_head_hidden=16, detections_per_image=8)
SHAPES_NORM = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _config(data_dir, heads=HEADS, **task):
  config = default_config()
  config.model = model_config(
      "multitask", backbone="small_cnn", backbone_args=ConfigDict({"widths": WIDTHS}),
      detection=ConfigDict(DETECTION), segmentation=ConfigDict({"decoder": "fcn8s"}),
      captioning=ConfigDict({"embed_dim": 8, "hidden_size": 8, "dropout": 0.0}))
  config.dataset.name = "shapes"
  config.dataset.data_dir = data_dir
  config.dataset.eval_split = "test[:16]"
  config.task = task_config("multitask", heads=heads, **SHAPES_NORM, **task)
  config.task.detection.max_objects = 4
  config.task.captioning.max_length = 8
  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = 2
  config.log_every_steps = 1
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2
  config.compilation_cache_dir = ""
  return config


def _zeros(shapes):
  """Zeros of the shapes and dtypes of a tree of ShapeDtypeStructs (variables without running init)."""
  return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _task_and_batches(config, data_dir, num_batches=1):
  task = MultiTaskTask(config, datasets.get_builder("shapes", data_dir).info)
  source = task.wrap_source(datasets.get_data_source("shapes", "train", data_dir), "train")
  it = pipeline.train_batches(source, task.preprocess_train, config.batch_size, seed=0)
  return task, [next(it) for _ in range(num_batches)]


def test_mixture_sources_cover_members_in_proportion():
  assert mixture.mixture_counts([1437, 2000], [1.0, 1.0]).tolist() == [2000, 2000]
  assert mixture.mixture_counts([3, 10], [3.0, 1.0]).tolist() == [30, 10]
  assert mixture.mixture_counts([5, 7], [1.0, 0.0]).tolist() == [5, 0]
  with pytest.raises(ValueError, match="empty"):
    mixture.mixture_counts([0, 7], [1.0, 1.0])
  small = [{"x": i} for i in range(3)]
  large = [{"x": 100 + i} for i in range(10)]
  mixed = mixture.MixtureSource([small, large], [3.0, 1.0])
  items = [mixed[i] for i in range(len(mixed))]
  assert len(items) == 40 and sum(e[mixture.MEMBER_KEY] == 0 for e in items) == 30
  assert sorted({e["x"] for e in items}) == list(range(3)) + list(range(100, 110))  # every example
  assert all(e["x"] == (100 * e[mixture.MEMBER_KEY] + e[mixture.INDEX_KEY]) for e in items)
  every = mixture.InterleavedSource([small, (), large])
  items = [every[i] for i in range(len(every))]
  assert sorted(e["x"] for e in items) == list(range(3)) + list(range(100, 110))
  assert [e[mixture.MEMBER_KEY] for e in items[:5]] == [2, 2, 0, 2, 2]  # member 0 at 1/6, 1/2, 5/6
  assert all(e["x"] == (50 * e[mixture.MEMBER_KEY] + e[mixture.INDEX_KEY]) for e in items)


def test_head_without_labels_gets_zero_gradient_and_log_variances_follow_kendall(data_dir):
  """Detection and captioning labels are in the batch but masked off: their heads' gradients are
  exactly zero, their log-variances too; labeled heads' d/ds_t (exp(-s_t) L_t + s_t) = 1 - L_t."""
  config = _config(data_dir, loss_weighting="uncertainty")
  task, (batch,) = _task_and_batches(config, data_dir)
  assert all(float(batch[f"has_{h}"].min()) == 1.0 for h in HEADS)
  variables = jax.jit(task.init_variables)(jax.random.PRNGKey(0), batch)
  params, model_state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
  grad_fn = jax.jit(jax.grad(task.loss_fn, has_aux=True))
  masked = dict(batch, has_detection=np.zeros(16, np.float32), has_captioning=np.zeros(16, np.float32))
  grads, (metrics, _) = grad_fn(params, model_state, masked, jax.random.PRNGKey(1))
  for head in ("detection", "captioning"):
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(grads[head])), head
  for part in ("backbone", "classification", "segmentation"):
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(grads[part])), part
  expected = [1.0 - float(metrics[f"{h}/loss"]) if h in ("classification", "segmentation") else 0.0 for h in HEADS]
  np.testing.assert_allclose(grads["log_variance"], expected, rtol=1e-5, atol=1e-7)
  grads, _ = grad_fn(params, model_state, batch, jax.random.PRNGKey(1))  # all labeled: all heads learn
  for head in HEADS:
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(grads[head])), head


def test_eight_devices_equal_one_device_and_log_variances_train(data_dir):
  config = _config(data_dir, loss_weighting="uncertainty")
  task, batches = _task_and_batches(config, data_dir, num_batches=2)
  half = (np.arange(16) % 2).astype(np.float32)  # every other example without classification labels
  batches = [dict(b, has_classification=half) for b in batches]
  tx = build_optimizer(config.optimizer, 10)
  s8, l8 = _run_steps(task, tx, jax.devices(), batches, steps=2)
  s1, l1 = _run_steps(task, tx, jax.devices()[:1], batches, steps=2)
  np.testing.assert_allclose(l8, l1, rtol=1e-4)
  for a, b in zip(jax.tree_util.tree_leaves(s8.params), jax.tree_util.tree_leaves(s1.params)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  assert np.all(np.abs(np.asarray(s8.params["log_variance"])) > 1e-3)


def test_mixture_run_through_the_core_reports_every_head(data_dir, tmp_path):
  """Classification from `digits` (28x28 grey), the other heads from `shapes`, at 32x32."""
  config = _config(data_dir, image_size=32, augment=())
  config.eval_batch_size = 32  # one batch, both members: pictures of every head
  config.dataset.cache_mb = 0  # read the few examples used, not the whole mixture up front
  config.dataset.num_workers = 0  # in-process preprocessing (the default would be one worker per core)
  config.dataset.train_split = "train"
  config.task.mixture = (("digits", "train", "test[:16]", 1.0, ("classification",)),
                         ("shapes", "train", "test[:16]", 1.0, ("detection", "segmentation", "captioning")))
  result = train_and_evaluate(config, str(tmp_path))
  for name in ("classification/accuracy", "detection/mAP", "segmentation/miou", "captioning/bleu_4",
               "captioning/cider"):
    assert np.isfinite(result[f"eval/{name}"]), name
  assert all(result[f"eval/{h}/examples"] == 16 for h in HEADS)
  train = [r for r in read_metrics(str(tmp_path)) if "train/loss" in r]
  assert {"train/classification/loss", "train/detection/rpn_box", "train/segmentation/pixel_accuracy",
          "train/captioning/word_accuracy"} <= set(train[-1])
  for record in train:  # every example has either classification labels or the others
    assert record["train/classification/labeled"] + record["train/detection/labeled"] == pytest.approx(1.0)
  assert 0.0 < np.mean([r["train/classification/labeled"] for r in train]) < 1.0
  pictures = {p.name for p in (tmp_path / "eval" / "step_2").iterdir()}
  assert {f"{h}_{k}.png" for h, k in (("classification", "predictions"), ("detection", "detections"),
                                       ("segmentation", "masks"), ("captioning", "captions"))} <= pictures

  # The trained run predicts on an image file (every head) and research-inspect sees every head's layers.
  record, inspected = predict_and_inspect(str(tmp_path), str(tmp_path / "look"))
  assert set(record["heads"]) == set(HEADS)
  assert len(record["heads"]["classification"]["top_k"]) == 5
  assert all(0 <= d["box"][0] <= d["box"][2] <= 40 * 1.01 for d in record["heads"]["detection"]["detections"])
  assert sum(record["heads"]["segmentation"]["class_fractions"].values()) == pytest.approx(1.0)
  assert {"greedy", "beam"} <= set(record["heads"]["captioning"])
  assert predict_summary(record).startswith(f"{record['file']}: classification ")
  stages = [s["name"] for s in inspected["activations"]]
  for head in ("backbone/", "detection/", "segmentation/"):
    assert any(name.startswith(head) for name in stages), (head, stages)


def _single(task_cls, task_name, data_dir, model_name, **model):
  """A single-task task on shapes with the same tiny backbone."""
  config = _config(data_dir)
  config.model = ConfigDict({"name": model_name, "backbone": "small_cnn", **model})
  config.task = task_config(task_name, **SHAPES_NORM)
  return task_cls(config, datasets.get_builder("shapes", data_dir).info)


def test_single_task_runs_load_into_the_joint_model_and_back(data_dir, tmp_path):
  """A Faster R-CNN run's backbone + head, loaded with RENAME_INTO_JOINT, detects exactly as it did;
  the joint model's backbone + segmentation head, loaded into FCN-8s, segments exactly as it did."""
  config = _config(data_dir, heads=("detection", "segmentation"))
  config.model.backbone_args = None  # FCN's small_cnn has the default widths
  joint, (batch,) = _task_and_batches(config, data_dir)
  images = batch["image"][:4]
  detector = _single(DetectionTask, "detection", data_dir, "faster_rcnn", **DETECTION)
  tx = build_optimizer(config.optimizer, 10)
  single = jax.jit(lambda r: detector.create_state(detector.init_variables(r, {"image": images}), tx))(
      jax.random.PRNGKey(5))
  checkpointer = Checkpointer(os.path.join(tmp_path, "checkpoints"), async_save=False)
  checkpointer.save(1, {"state": single, "accum": {}}, {"step": 1, "next_batch_index": 1})
  checkpointer.close()

  fresh = jax.jit(joint.init_variables)(jax.random.PRNGKey(0), {k: v[:4] for k, v in batch.items()})
  merged, report = merge_pretrained(fresh, load_variables(str(tmp_path)), rename=RENAME_INTO_JOINT["faster_rcnn"])
  assert {p.split("/")[1] for p in report["loaded"]} == {"backbone", "detection"}
  assert {p.split("/")[1] for p in report["reinitialized"]} == {"segmentation"}
  forward = jax.jit(lambda v: joint.model.apply(v, images))
  out = forward(merged)
  theirs = jax.jit(lambda s: detector.predict(s, {"image": images}))(single)
  for key in ("boxes", "scores", "labels", "valid"):
    np.testing.assert_allclose(out["detection"][key], theirs[key], rtol=1e-4, atol=1e-4)

  # The score layers start at zero: make the segmentation head's output depend on every parameter.
  noise = iter(jax.random.split(jax.random.PRNGKey(9), 100))
  merged["params"]["segmentation"] = jax.tree_util.tree_map(
      lambda x: x + 0.1 * jax.random.normal(next(noise), x.shape), merged["params"]["segmentation"])
  out = forward(merged)
  segmenter = _single(SegmentationTask, "segmentation", data_dir, "fcn8s")
  fresh = _zeros(jax.eval_shape(segmenter.init_variables, jax.random.PRNGKey(7), {"image": images}))
  merged, report = merge_pretrained(fresh, jax.device_get(merged), rename=RENAME_FROM_JOINT["fcn8s"])
  assert not report["reinitialized"]
  theirs = jax.jit(segmenter.model.apply)(merged, images)
  np.testing.assert_allclose(theirs, out["segmentation"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["faster_rcnn", "fcn8s", "deeplabv3", "show_tell"])
def test_rename_presets_map_every_parameter_both_ways(name):
  """RENAME_INTO_JOINT / RENAME_FROM_JOINT map each single-task model onto the joint model with that
  head, every variable one-to-one (shapes only: traced, not run)."""
  head, single = {"faster_rcnn": ("detection", dict(num_classes=3)), "fcn8s": ("segmentation", dict(num_classes=4)),
                  "deeplabv3": ("segmentation", dict(num_classes=4)),
                  "show_tell": ("captioning", dict(vocab_size=12))}[name]
  joint = MultiTaskModel(
      heads=(head,), num_classes={head: single.get("num_classes", 0)}, vocab_size=single.get("vocab_size"),
      segmentation={"decoder": name} if head == "segmentation" else None)
  images, tokens = jnp.zeros((2, 64, 64, 3)), jnp.zeros((2, 6), jnp.int32)
  ours = _zeros(jax.eval_shape(lambda: joint.init(jax.random.PRNGKey(0), images, targets={"captioning": tokens})))
  model = MODELS.build(name, backbone="small_cnn", **single)
  inputs = (images, tokens) if head == "captioning" else (images,)
  theirs = _zeros(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs)))
  count = lambda tree: len(jax.tree_util.tree_leaves(tree))  # noqa: E731
  assert count(ours) == count(theirs)
  _, report = merge_pretrained(ours, theirs, rename=RENAME_INTO_JOINT[name])
  assert not report["reinitialized"] and len(report["loaded"]) == count(ours)
  _, report = merge_pretrained(theirs, ours, rename=RENAME_FROM_JOINT[name])
  assert not report["reinitialized"] and len(report["loaded"]) == count(theirs)
