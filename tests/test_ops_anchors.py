"""Anchors, IoU matching and balanced sampling against torchvision's detection utilities."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.ops import anchors as anchor_ops
from research.ops.boxes import box_iou
from research.ops.matcher import match, sample_balanced

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models.detection._utils import (  # noqa: E402
    BalancedPositiveNegativeSampler, Matcher)
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402


def torchvision_anchors(image_size, feature_sizes, sizes, aspect_ratios) -> np.ndarray:
  generator = AnchorGenerator(sizes, aspect_ratios)
  images = ImageList(torch.zeros(1, 3, *image_size), [image_size])
  features = [torch.zeros(1, 1, *size) for size in feature_sizes]
  return generator(images, features)[0].numpy()


@pytest.mark.parametrize("image_size,feature_sizes,sizes,aspect_ratios", [
    # Faster R-CNN C4 / VGG: one level, three sizes x three ratios.
    ((600, 800), [(38, 50)], ((128, 256, 512),), ((0.5, 1.0, 2.0),)),
    # FPN: five levels, one size each; 1333 // 42 = 31 is torchvision's stride, not 32.
    ((800, 1333), [(200, 334), (100, 167), (50, 84), (25, 42), (13, 21)],
     ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5),
    # Odd sizes and ratios whose half-sizes round at .5.
    ((64, 96), [(8, 12), (4, 6)], ((16, 24), (40,)), ((0.25, 1.0, 3.0), (1.0, 0.7))),
])
def test_anchors_match_torchvision(image_size, feature_sizes, sizes, aspect_ratios):
  ours = np.asarray(anchor_ops.multilevel_anchors(image_size, feature_sizes, sizes, aspect_ratios))
  ref = torchvision_anchors(image_size, feature_sizes, sizes, aspect_ratios)
  assert ours.shape == ref.shape
  np.testing.assert_array_equal(ours, ref)


def test_base_anchors_aspect_ratio_is_height_over_width():
  (x1, y1, x2, y2), = np.asarray(anchor_ops.base_anchors((64,), (4.0,)))
  assert (y2 - y1) == 4 * (x2 - x1) == 128


def random_boxes(rng, n, span=200.0, max_size=80.0):
  xy = rng.uniform(0, span, size=(n, 2))
  wh = rng.uniform(4, max_size, size=(n, 2))
  return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


@pytest.mark.parametrize("allow_low_quality", [False, True])
def test_matcher_matches_torchvision(allow_low_quality):
  rng = np.random.default_rng(0)
  gt = random_boxes(rng, 6)
  anchors = random_boxes(rng, 500)
  anchors[:3] = gt[:3]  # exact ties at IoU 1
  quality = np.asarray(box_iou(gt, anchors))
  ref = Matcher(0.7, 0.3, allow_low_quality)(torch.tensor(quality)).numpy()
  ours = np.asarray(jax.jit(match, static_argnums=(1, 2, 3))(quality, 0.7, 0.3, allow_low_quality))
  np.testing.assert_array_equal(ours, ref)
  assert {-2, -1}.issubset(set(ours.tolist())) and (ours >= 0).any()

  # Padded ground truth: rows marked invalid are ignored.
  padded = np.concatenate([quality, np.full((3, 500), 0.99, np.float32)])
  valid = np.arange(9) < 6
  np.testing.assert_array_equal(match(padded, 0.7, 0.3, allow_low_quality, valid), ref)


def test_matcher_without_ground_truth_is_all_background():
  quality = np.zeros((4, 50), np.float32)
  matches = np.asarray(match(quality, 0.7, 0.3, True, np.zeros(4, bool)))
  np.testing.assert_array_equal(matches, -1)


@pytest.mark.parametrize("num_pos,num_neg", [(500, 3000), (20, 3000), (20, 100), (0, 0)])
def test_sampler_counts_match_torchvision(num_pos, num_neg):
  rng = np.random.default_rng(1)
  labels = np.full(4000, -1, np.int32)  # ignored / padding
  slots = rng.permutation(4000)
  labels[slots[:num_pos]] = rng.integers(1, 5, num_pos)
  labels[slots[num_pos:num_pos + num_neg]] = 0
  (ref_pos,), (ref_neg,) = BalancedPositiveNegativeSampler(256, 0.5)([torch.from_numpy(labels)])
  sample = jax.jit(sample_balanced, static_argnums=(2, 3))
  pos, neg = (np.asarray(m) for m in sample(jax.random.key(0), labels, 256, 0.5))
  assert pos.sum() == int(ref_pos.sum()) and neg.sum() == int(ref_neg.sum())
  assert (labels[pos] >= 1).all() and (labels[neg] == 0).all()
  # Another key draws another subset of the same size.
  pos2, _ = (np.asarray(m) for m in sample(jax.random.key(1), labels, 256, 0.5))
  assert pos2.sum() == pos.sum()
  if num_pos > 128:
    assert (pos2 != pos).any()


def test_sampler_is_uniform():
  labels = np.zeros(40, np.int32)
  labels[:10] = 1
  keys = jax.random.split(jax.random.key(2), 1000)
  pos, neg = jax.jit(jax.vmap(lambda k: sample_balanced(k, jnp.asarray(labels), 8, 0.25)))(keys)
  frequency = np.asarray(pos, np.float64).mean(0)[:10]  # each positive is drawn 2 times in 10
  np.testing.assert_allclose(frequency, 0.2, atol=0.05)
  np.testing.assert_allclose(np.asarray(neg, np.float64).mean(0)[10:], 6 / 30, atol=0.05)
