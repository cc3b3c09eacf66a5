"""Faster R-CNN: pieces against torchvision's detection code, training without objects, and the
data-parallel step (8 devices equal 1) through the detection task on `shapes`."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.models  # noqa: F401
from research.core.optim import build_optimizer
from research.data import datasets, pipeline
from research.models.detection import roi_heads, rpn
from research.models.detection.faster_rcnn import FasterRCNN
from research.ops.anchors import multilevel_anchors
from research.tasks.detection import DetectionTask
from tests.core_helpers import small_config
from tests.test_core_parallel import _run_steps

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models.detection import roi_heads as tv_roi_heads  # noqa: E402
from torchvision.models.detection import rpn as tv_rpn  # noqa: E402
from torchvision.models.detection._utils import BoxCoder  # noqa: E402

TINY = dict(backbone="small_cnn", backbone_args={"widths": (8, 8, 16, 16, 16)},
            feature_levels=("c2", "c3", "c4"), fpn_channels=16, anchor_sizes=((12,), (24,), (48,)),
            rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=100,
            rpn_post_nms_top_n_test=30, rpn_batch_size_per_image=64, box_batch_size_per_image=32,
            canonical_scale=16.0, canonical_level=3, box_head_hidden=32, detections_per_image=20)


def _random_boxes(rng, n, size, low=4, high=40):
  xy = rng.uniform(-5, size - 10, size=(n, 2))
  wh = rng.uniform(low, high, size=(n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def test_proposals_match_torchvision_filter_proposals():
  rng = np.random.default_rng(0)
  feature_sizes = [(16, 16), (8, 8), (4, 4)]
  anchors = multilevel_anchors((64, 64), feature_sizes, ((12,), (24,), (48,)), [(0.5, 1.0, 2.0)] * 3)
  per_level = [h * w * 3 for h, w in feature_sizes]
  logits = rng.normal(size=(2, anchors.shape[0])).astype(np.float32)
  codes = (rng.normal(size=(2, anchors.shape[0], 4)) * 0.3).astype(np.float32)
  select = functools.partial(rpn.select_proposals, anchors, per_level, image_hw=(64, 64),
                             pre_nms_top_n=100, post_nms_top_n=60, nms_threshold=0.7)
  boxes, valid = jax.jit(jax.vmap(select))(logits, codes)

  head = tv_rpn.RPNHead(4, 3)
  net = tv_rpn.RegionProposalNetwork(None, head, 0.7, 0.3, 256, 0.5, dict(training=100, testing=100),
                                     dict(training=60, testing=60), 0.7).eval()
  decoded = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(
      torch.tensor(codes.reshape(-1, 4)), [torch.tensor(anchors)] * 2).reshape(2, -1, 4)
  ref_boxes, _ = net.filter_proposals(decoded, torch.tensor(logits.reshape(-1, 1)), [(64, 64)] * 2, per_level)
  for i in range(2):
    ours = np.asarray(boxes[i])[np.asarray(valid[i])]
    np.testing.assert_allclose(ours, ref_boxes[i].numpy(), rtol=1e-5, atol=1e-4)


def test_multilevel_roi_align_matches_torchvision():
  rng = np.random.default_rng(1)
  features = [rng.normal(size=(2, s, s, 5)).astype(np.float32) for s in (16, 8, 4)]
  rois = np.stack([_random_boxes(rng, 12, 64, 2, 60) for _ in range(2)])
  ours = jax.jit(lambda f, r: roi_heads.multilevel_roi_align(
      f, [4, 8, 16], r, 7, 2, canonical_scale=16.0, canonical_level=3))(features, rois)
  pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2"], 7, 2, canonical_scale=16, canonical_level=3)
  ref = pooler({str(i): torch.tensor(f.transpose(0, 3, 1, 2)) for i, f in enumerate(features)},
               [torch.tensor(r) for r in rois], [(64, 64)] * 2)
  np.testing.assert_allclose(np.asarray(ours).reshape(-1, 7, 7, 5), ref.numpy().transpose(0, 2, 3, 1),
                             rtol=1e-5, atol=1e-5)


def test_detections_match_torchvision_postprocess():
  rng = np.random.default_rng(2)
  num_props, num_classes = 200, 4
  proposals = _random_boxes(rng, num_props, 64, 4, 30)
  logits = (rng.normal(size=(num_props, num_classes + 1)) * 2).astype(np.float32)
  codes = (rng.normal(size=(num_props, num_classes + 1, 4)) * 0.5).astype(np.float32)
  valid = np.ones(num_props, bool)
  det = jax.jit(functools.partial(roi_heads.detections, image_hw=(64, 64), max_detections=50))(
      logits, codes, proposals, valid)
  heads = tv_roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 50)
  boxes, scores, labels = heads.postprocess_detections(
      torch.tensor(logits), torch.tensor(codes.reshape(num_props, -1)), [torch.tensor(proposals)], [(64, 64)])
  keep = np.asarray(det["valid"])
  assert keep.sum() == len(scores[0]) > 10
  np.testing.assert_allclose(np.asarray(det["scores"])[keep], scores[0].numpy(), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(det["labels"])[keep], labels[0].numpy())
  np.testing.assert_allclose(np.asarray(det["boxes"])[keep], boxes[0].numpy(), rtol=1e-5, atol=1e-4)


def test_box_head_loss_matches_torchvision_fastrcnn_loss():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 16, 4)).astype(np.float32)
  codes = rng.normal(size=(2, 16, 4, 4)).astype(np.float32)
  labels = rng.integers(0, 4, size=(2, 16)).astype(np.int32)
  targets = np.where(labels[..., None] > 0, rng.normal(size=(2, 16, 4)), 0).astype(np.float32)
  ours = roi_heads.box_head_losses(jnp.asarray(logits), jnp.asarray(codes),
                                   {"labels": labels, "codes": targets, "weight": np.ones((2, 16), np.float32)})
  cls, box = tv_roi_heads.fastrcnn_loss(torch.tensor(logits.reshape(32, 4)), torch.tensor(codes.reshape(32, 16)),
                                        [torch.tensor(labels[i].astype(np.int64)) for i in range(2)],
                                        [torch.tensor(targets[i]) for i in range(2)])
  np.testing.assert_allclose(float(ours["roi_classifier"]), cls.item(), rtol=1e-5)
  np.testing.assert_allclose(float(ours["roi_box"]), box.item(), rtol=1e-5)


def test_images_without_objects_train_with_finite_gradients():
  model = FasterRCNN(num_classes=3, **TINY)
  rng = np.random.default_rng(4)
  images = jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32)
  boxes = np.zeros((2, 4, 4), np.float32)
  boxes[0, :2] = _random_boxes(rng, 2, 64, 10, 20)
  targets = {"boxes": jnp.asarray(boxes), "labels": jnp.ones((2, 4), jnp.int32),
             "valid": jnp.asarray([[True, True, False, False], [False] * 4])}
  variables = model.init({"params": jax.random.PRNGKey(0)}, images)
  state = {k: v for k, v in variables.items() if k != "params"}

  def loss(params, targets):
    out, _ = model.apply({"params": params, **state}, images, train=True, targets=targets,
                         rngs={"sampling": jax.random.PRNGKey(1)}, mutable=list(state))
    return sum(out.values()), out

  for t in (targets, dict(targets, valid=jnp.zeros((2, 4), bool))):
    (total, parts), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"], t)
    assert np.isfinite(float(total)) and all(np.isfinite(float(v)) for v in parts.values())
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
  assert float(parts["rpn_box"]) == 0.0 and float(parts["roi_box"]) == 0.0
  assert float(parts["rpn_objectness"]) > 0.0
  detections = jax.jit(lambda p: model.apply({"params": p, **state}, images))(variables["params"])
  assert detections["boxes"].shape == (2, 20, 4) and detections["valid"].dtype == jnp.bool_


def _detection_config(data_dir):
  config = small_config(data_dir, model="faster_rcnn")
  config.model = config.model.__class__({"name": "faster_rcnn", **TINY})
  config.dataset.name = "shapes"
  config.task = config.task.__class__({"name": "detection", "max_objects": 4, "mean": (0.5, 0.5, 0.5),
                                       "std": (0.25, 0.25, 0.25)})
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  return config


def test_eight_devices_equal_one_device(data_dir):
  config = _detection_config(data_dir)
  source = datasets.get_data_source("shapes", "train", data_dir)
  task = DetectionTask(config, datasets.get_builder("shapes", data_dir).info)
  source = task.wrap_source(source, "train")
  tx = build_optimizer(config.optimizer, 10)
  it = pipeline.train_batches(source, task.preprocess_train, 16, seed=0)
  batches = [next(it) for _ in range(2)]
  s8, l8 = _run_steps(task, tx, jax.devices(), batches, steps=2)
  s1, l1 = _run_steps(task, tx, jax.devices()[:1], batches, steps=2)
  np.testing.assert_allclose(l8, l1, rtol=1e-4)
  # Sums over 8 shards add up in another order than over one; Adam's update (gradient / its RMS)
  # turns that last-bit difference into up to ~1e-4 where a gradient is near zero.
  for a, b in zip(jax.tree_util.tree_leaves(s8.params), jax.tree_util.tree_leaves(s1.params)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_training_run_reports_coco_metrics_and_pictures(data_dir, tmp_path):
  from research.core.train import train_and_evaluate
  config = _detection_config(data_dir)
  config.num_train_steps = 4
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 4
  config.batch_size = 8
  result = train_and_evaluate(config, str(tmp_path))
  for name in ("eval/mAP", "eval/AP50", "eval/AP75"):
    assert 0.0 <= result[name] <= 1.0
  assert any(p.name.endswith(".png") for p in tmp_path.rglob("*detections*"))
  from tests.core_helpers import predict_and_inspect
  record, inspected = predict_and_inspect(str(tmp_path), str(tmp_path / "look"))
  assert all(0 <= d["box"][0] <= d["box"][2] <= 40 * 1.01 and 0 <= d["box"][1] <= d["box"][3] <= 50 * 1.01
             for d in record["detections"])
  stages = [s["name"] for s in inspected["activations"]]
  assert {"head/fpn/layer0", "head/rpn/conv.0", "head/rpn/cls_logits.2"} <= set(stages), stages


def test_vgg16_voc07_config_loads_the_imagenet_classifier_into_backbone_and_box_head():
  """configs/faster_rcnn_vgg16_voc07.py: every VGG-16 convolution goes into the backbone and the
  classifier's fc1 / fc2 into the box head's fc6 / fc7 (same shapes); only the RPN, the predictors
  and VGG's own last layer are left out."""
  from research.core.checkpoint import merge_pretrained
  from research.core.registry import MODELS
  from tests.core_helpers import project_config
  config = project_config("faster_rcnn_vgg16_voc07")
  x = jnp.zeros((1, 64, 64, 3))
  kwargs = {**{k: v for k, v in config.model.items() if k != "name"}, "box_head_hidden": 16}  # 4096 in the config
  model = MODELS.build("faster_rcnn", num_classes=20, **kwargs)
  fresh = jax.eval_shape(lambda x: model.init({"params": jax.random.PRNGKey(0), "sampling": jax.random.PRNGKey(1)},
                                              x), x)
  pretrained = jax.eval_shape(MODELS.build("vgg16", num_classes=1000, hidden=16).init, jax.random.PRNGKey(0),
                              jnp.zeros((1, 224, 224, 3)))
  pretrained = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), pretrained)
  _, report = merge_pretrained(fresh, pretrained, rename=config.init_from.rename)
  assert sorted(report["reinitialized"]) == sorted(
      f"params/head/{n}/{leaf}" for n in ("box_head/cls_score", "box_head/bbox_pred", "rpn/bbox_pred",
                                          "rpn/cls_logits", "rpn/conv") for leaf in ("bias", "kernel"))
  assert len(report["loaded"]) == 2 * 13 + 4  # 13 convolutions, fc6, fc7
