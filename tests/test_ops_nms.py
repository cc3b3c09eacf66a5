"""NMS and class-aware NMS against torchvision.ops.nms / batched_nms."""
import jax
import numpy as np
import pytest

from research.ops.nms import batched_nms, nms

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

jit_nms = jax.jit(nms, static_argnums=(2, 3))
jit_batched_nms = jax.jit(batched_nms, static_argnums=(3, 4))


def clustered_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
  """Boxes around a few centres, so that many overlap at every IoU level."""
  centres = rng.uniform(0, 300, size=(8, 2))[rng.integers(0, 8, n)]
  xy = centres + rng.normal(scale=8.0, size=(n, 2))
  wh = rng.uniform(10, 60, size=(n, 2))
  return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def kept(indices, valid) -> np.ndarray:
  return np.asarray(indices)[np.asarray(valid)]


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(iou_threshold):
  rng = np.random.default_rng(0)
  boxes = clustered_boxes(rng, 300)
  scores = rng.uniform(size=300).astype(np.float32)
  ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                            iou_threshold).numpy()
  indices, valid = jit_nms(boxes, scores, iou_threshold, 300)
  np.testing.assert_array_equal(kept(indices, valid), ref)
  assert 10 < ref.size < 300
  # max_output truncates to the highest-scoring kept boxes; padding entries are 0.
  indices, valid = jit_nms(boxes, scores, iou_threshold, 5)
  np.testing.assert_array_equal(indices, ref[:5])
  assert np.asarray(valid).all()


def test_nms_edge_cases():
  boxes = np.array([
      [0, 0, 10, 10], [0, 0, 10, 10],    # duplicates with tied scores
      [5, 5, 5, 5], [5, 5, 5, 5],        # empty boxes (IoU NaN with each other: not suppressed)
      [0, 0, 10, 10.5],                  # IoU exactly 10 / 10.5 with the first box
      [20, 20, 30, 30], [25, 20, 35, 30],  # IoU exactly 1/3
      [-30, -30, -20, -20],              # outside the image
      [40, 0, 50, 10], [40, 0, 50, 20],  # IoU exactly 0.5: kept at threshold 0.5
  ], np.float32)
  scores = np.array([0.9, 0.9, 0.8, 0.8, 0.7, 0.6, 0.6, 0.6, 0.5, 0.4], np.float32)
  for threshold in (1 / 3, 0.5, 0.95, 10 / 10.5):
    ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
    indices, valid = jit_nms(boxes, scores, threshold, 10)
    np.testing.assert_array_equal(kept(indices, valid), ref)
    assert (9 in ref) == (threshold >= 0.5) and 1 not in ref
  # Valid mask: padding neither survives nor suppresses; all-padding gives nothing.
  valid_in = np.arange(10) > 0
  indices, valid = jit_nms(boxes, scores, 0.5, 10, valid=valid_in)
  ref = torchvision.ops.nms(torch.from_numpy(boxes[1:]), torch.from_numpy(scores[1:]), 0.5).numpy()
  np.testing.assert_array_equal(kept(indices, valid), ref + 1)
  indices, valid = jit_nms(boxes, scores, 0.5, 4, valid=np.zeros(10, bool))
  assert not np.asarray(valid).any() and (np.asarray(indices) == 0).all()


def test_batched_nms_matches_torchvision():
  rng = np.random.default_rng(1)
  n = 400
  boxes = clustered_boxes(rng, n)
  scores = rng.uniform(size=n).astype(np.float32)
  classes = rng.integers(0, 4, n).astype(np.int32)
  ref = torchvision.ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                    torch.from_numpy(classes).long(), 0.5).numpy()
  indices, valid = jit_batched_nms(boxes, scores, classes, 0.5, n)
  np.testing.assert_array_equal(kept(indices, valid), ref)
  plain = kept(*jit_nms(boxes, scores, 0.5, n))
  assert ref.size > plain.size  # class awareness matters on this input


def test_nms_2000_boxes_under_vmap():
  rng = np.random.default_rng(2)
  boxes = np.stack([clustered_boxes(rng, 2000) for _ in range(2)])
  scores = rng.uniform(size=(2, 2000)).astype(np.float32)
  indices, valid = jax.jit(jax.vmap(lambda b, s: nms(b, s, 0.7, 1000)))(boxes, scores)
  for i in range(2):
    ref = torchvision.ops.nms(torch.from_numpy(boxes[i]), torch.from_numpy(scores[i]), 0.7).numpy()
    np.testing.assert_array_equal(kept(indices[i], valid[i]), ref[:1000])
