"""Box geometry and the box coder against torchvision (boxes [x1, y1, x2, y2] pixels)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.ops import box_coder, boxes as box_ops

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models.detection._utils import BoxCoder  # noqa: E402


def random_boxes(rng: np.random.Generator, n: int, low: float = -20.0, high: float = 120.0,
                 max_size: float = 60.0) -> np.ndarray:
  xy = rng.uniform(low, high, size=(n, 2))
  wh = rng.uniform(0.5, max_size, size=(n, 2))
  return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def edge_boxes() -> np.ndarray:
  """Empty (zero width/height/both), identical, touching and out-of-image boxes."""
  return np.array([
      [10, 10, 10, 10],      # point
      [10, 10, 10, 30],      # zero width
      [10, 10, 30, 10],      # zero height
      [10, 10, 30, 30],
      [10, 10, 30, 30],      # duplicate
      [30, 10, 50, 30],      # touches the previous along x = 30
      [-50, -40, -10, -5],   # outside the image
      [90, 95, 400, 300],    # partly outside
      [0, 0, 100, 100],
  ], np.float32)


def test_box_iou_matches_torchvision():
  rng = np.random.default_rng(0)
  a = np.concatenate([random_boxes(rng, 40), edge_boxes()])
  b = np.concatenate([edge_boxes(), random_boxes(rng, 30)])
  ours = np.asarray(jax.jit(box_ops.box_iou)(a, b))
  ref = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
  assert ours.shape == (49, 39)
  assert np.isnan(ours[40, 0])  # two zero-area boxes: 0 / 0, as torchvision
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7, equal_nan=True)
  assert np.nanmax(ours) > 0.99 and (ours == 0).any()


def test_box_area_clip_and_min_size_match_torchvision():
  rng = np.random.default_rng(1)
  b = np.concatenate([random_boxes(rng, 50, max_size=8.0), edge_boxes()])
  tb = torch.from_numpy(b)
  np.testing.assert_allclose(box_ops.box_area(b), torchvision.ops.box_area(tb).numpy(), rtol=1e-6)
  clipped = jax.jit(box_ops.clip_boxes, static_argnums=1)(b, (80, 100))
  np.testing.assert_array_equal(clipped, torchvision.ops.clip_boxes_to_image(tb, (80, 100)).numpy())
  # Per-image sizes of a padded batch: [B, 1, 2] against boxes [B, N, 4].
  batch = np.stack([b, b])
  sizes = np.array([[[80, 100]], [[40, 30]]], np.float32)
  clipped = np.asarray(jax.jit(box_ops.clip_boxes)(batch, sizes))
  np.testing.assert_array_equal(clipped[1],
                                torchvision.ops.clip_boxes_to_image(tb, (40, 30)).numpy())
  for min_size in (0.0, 1.0, 4.0):
    keep = np.flatnonzero(np.asarray(box_ops.min_size_mask(b, min_size)))
    np.testing.assert_array_equal(keep, torchvision.ops.remove_small_boxes(tb, min_size).numpy())


def test_conversions():
  rng = np.random.default_rng(2)
  b = random_boxes(rng, 20).reshape(4, 5, 4)
  tb = torch.from_numpy(b.reshape(-1, 4))
  cxcywh = np.asarray(box_ops.xyxy_to_cxcywh(b))
  np.testing.assert_allclose(cxcywh.reshape(-1, 4),
                             torchvision.ops.box_convert(tb, "xyxy", "cxcywh").numpy(), rtol=1e-6)
  back = torchvision.ops.box_convert(torch.tensor(cxcywh.reshape(-1, 4)), "cxcywh", "xyxy")
  np.testing.assert_allclose(np.asarray(box_ops.cxcywh_to_xyxy(cxcywh)).reshape(-1, 4),
                             back.numpy(), rtol=1e-6)
  yxyx = np.asarray(box_ops.xyxy_to_yxyx(b))
  np.testing.assert_array_equal(yxyx[..., 0], b[..., 1])
  np.testing.assert_array_equal(yxyx[..., 3], b[..., 2])
  np.testing.assert_array_equal(box_ops.yxyx_to_xyxy(yxyx), b)


@pytest.mark.parametrize("weights", [box_coder.RPN_WEIGHTS, box_coder.ROI_HEAD_WEIGHTS])
def test_box_coder_matches_torchvision(weights):
  rng = np.random.default_rng(3)
  anchors = random_boxes(rng, 64)
  targets = random_boxes(rng, 64)
  ref_coder = BoxCoder(weights)
  codes = np.asarray(jax.jit(box_coder.encode_boxes, static_argnums=2)(targets, anchors, weights))
  ref_codes = ref_coder.encode_single(torch.from_numpy(targets), torch.from_numpy(anchors))
  np.testing.assert_allclose(codes, ref_codes.numpy(), rtol=1e-5, atol=1e-5)
  decoded = box_coder.decode_boxes(codes, anchors, weights)
  np.testing.assert_allclose(decoded, targets, rtol=1e-4, atol=1e-3)

  # Class-specific codes [N, C, 4] (one with huge dw/dh to exercise the clamp).
  class_codes = rng.normal(scale=3.0, size=(64, 3, 4)).astype(np.float32)
  class_codes[0, 0, 2:] = 50.0 * np.asarray(weights[2:])
  ours = np.asarray(box_coder.decode_boxes(class_codes, anchors[:, None, :], weights))
  ref = ref_coder.decode(torch.from_numpy(class_codes.reshape(64, 12)), [torch.from_numpy(anchors)])
  np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=1e-3)
  width = anchors[0, 2] - anchors[0, 0]
  np.testing.assert_allclose(ours[0, 0, 2] - ours[0, 0, 0], width * 1000 / 16, rtol=1e-5)
  assert box_coder.BBOX_XFORM_CLIP == math.log(1000.0 / 16)


def test_box_coder_gradient_is_finite():
  rng = np.random.default_rng(4)
  anchors = jnp.asarray(random_boxes(rng, 8))
  codes = jnp.asarray(rng.normal(size=(8, 4)).astype(np.float32))
  grad = jax.jit(jax.grad(
      lambda c: box_coder.decode_boxes(c, anchors, box_coder.ROI_HEAD_WEIGHTS).sum()))(codes)
  assert np.isfinite(np.asarray(grad)).all()
