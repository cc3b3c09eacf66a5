"""RoIAlign (NHWC features, [x1, y1, x2, y2] pixel boxes) against torchvision.ops.roi_align."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.ops.roi_align import roi_align, roi_align_per_image

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

N, C, H, W = 2, 3, 13, 17
OUTPUT = (7, 5)


def make_inputs(seed: int, k: int = 30, inside: bool = False):
  """NHWC features, image-pixel boxes for stride 4 (52 x 68 image), image indices."""
  rng = np.random.default_rng(seed)
  features = rng.normal(size=(N, H, W, C)).astype(np.float32)
  if inside:
    xy = rng.uniform(0, 30, size=(k, 2))
    wh = rng.uniform(0, 20, size=(k, 2))
  else:
    xy = rng.uniform(-30, 70, size=(k, 2))
    wh = rng.uniform(0, 60, size=(k, 2))
  boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
  boxes[:2, 2:] = boxes[:2, :2]  # empty boxes
  boxes[2] = [-40, -30, -10, -5]  # entirely outside the image
  boxes[3] = [0, 0, 68, 52]  # the whole image
  return features, boxes, rng.integers(0, N, k).astype(np.int32)


def reference(features, boxes, batch_indices, scale, sampling_ratio, aligned):
  rois = torch.cat([torch.tensor(batch_indices, dtype=torch.float32)[:, None],
                    torch.tensor(boxes)], dim=1)
  nchw = torch.tensor(features.transpose(0, 3, 1, 2))
  out = torchvision.ops.roi_align(nchw, rois, OUTPUT, scale, sampling_ratio, aligned)
  return out.numpy().transpose(0, 2, 3, 1)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def ours(features, boxes, batch_indices, scale, sampling_ratio, aligned, bound=None):
  return roi_align(features, boxes, batch_indices, OUTPUT, scale, sampling_ratio, aligned, bound)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_exact_grid_matches_torchvision(aligned, sampling_ratio):
  features, boxes, batch_indices = make_inputs(0)
  out = ours(features, boxes, batch_indices, 0.25, sampling_ratio, aligned)
  ref = reference(features, boxes, batch_indices, 0.25, sampling_ratio, aligned)
  assert out.shape == (30, 7, 5, C)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  assert np.abs(ref).max() > 0.5


@pytest.mark.parametrize("aligned", [False, True])
def test_adaptive_grid_matches_torchvision(aligned):
  # Default bound ceil(H / PH) x ceil(W / PW): exact for boxes inside the feature map.
  features, boxes, batch_indices = make_inputs(1, inside=True)
  ref = reference(features, boxes, batch_indices, 0.25, 0, aligned)
  np.testing.assert_allclose(ours(features, boxes, batch_indices, 0.25, 0, aligned), ref,
                             rtol=1e-5, atol=1e-5)
  # Boxes larger than the feature map need a larger bound: at scale 0.5 the whole-image box
  # spans 26 x 34 cells, ceil(26 / 7) = 4 rows and ceil(34 / 5) = 7 columns of samples a bin,
  # and random boxes up to 30 x 30 cells need 5 x 6.
  features, boxes, batch_indices = make_inputs(2)
  ref = reference(features, boxes, batch_indices, 0.5, -1, aligned)
  np.testing.assert_allclose(ours(features, boxes, batch_indices, 0.5, -1, aligned, (5, 7)), ref,
                             rtol=1e-5, atol=1e-5)


def test_adaptive_grid_larger_than_bound_uses_the_bound():
  features, _, _ = make_inputs(3)
  boxes = np.array([[-100, -100, 300, 300]], np.float32)  # 100 x 100 cells: 15 x 20 samples a bin
  out = ours(features, boxes, np.zeros(1, np.int32), 0.25, 0, False, (4, 4))
  ref = reference(features, boxes, np.zeros(1, np.int32), 0.25, 4, False)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_gradient_matches_torchvision():
  features, boxes, batch_indices = make_inputs(4)
  cotangent = np.random.default_rng(5).normal(size=(30, *OUTPUT, C)).astype(np.float32)
  grad = jax.jit(jax.grad(lambda f: jnp.sum(
      roi_align(f, boxes, batch_indices, OUTPUT, 0.25, 2, True) * cotangent)))(features)
  nchw = torch.tensor(features.transpose(0, 3, 1, 2), requires_grad=True)
  rois = torch.cat([torch.tensor(batch_indices, dtype=torch.float32)[:, None],
                    torch.tensor(boxes)], dim=1)
  out = torchvision.ops.roi_align(nchw, rois, OUTPUT, 0.25, 2, True)
  (out * torch.tensor(cotangent.transpose(0, 3, 1, 2))).sum().backward()
  np.testing.assert_allclose(grad, nchw.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)


def _per_image_inputs(seed: int):
  """Boxes [N, R, 4] with R = 15 per image (edge cases included) and their flat form."""
  features, boxes, _ = make_inputs(seed)
  return features, boxes.reshape(N, 15, 4), boxes, np.repeat(np.arange(N, dtype=np.int32), 15)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_per_image_form_matches_torchvision(aligned, sampling_ratio):
  features, per_image, flat, batch_indices = _per_image_inputs(6)
  bound = (5, 7) if sampling_ratio <= 0 else None
  out = jax.jit(lambda f, b: roi_align_per_image(f, b, OUTPUT, 0.5, sampling_ratio, aligned, bound))(
      features, per_image)
  ref = reference(features, flat, batch_indices, 0.5, sampling_ratio, aligned)
  assert out.shape == (N, 15, 7, 5, C)
  np.testing.assert_allclose(out.reshape(-1, *OUTPUT, C), ref, rtol=1e-5, atol=1e-5)


def test_per_image_gradient_matches_torchvision():
  features, per_image, flat, batch_indices = _per_image_inputs(7)
  cotangent = np.random.default_rng(8).normal(size=(N, 15, *OUTPUT, C)).astype(np.float32)
  grad = jax.jit(jax.grad(lambda f: jnp.sum(
      roi_align_per_image(f, per_image, OUTPUT, 0.25, 2, False) * cotangent)))(features)
  nchw = torch.tensor(features.transpose(0, 3, 1, 2), requires_grad=True)
  rois = torch.cat([torch.tensor(batch_indices, dtype=torch.float32)[:, None],
                    torch.tensor(flat)], dim=1)
  out = torchvision.ops.roi_align(nchw, rois, OUTPUT, 0.25, 2, False)
  (out * torch.tensor(cotangent.reshape(-1, *OUTPUT, C).transpose(0, 3, 1, 2))).sum().backward()
  np.testing.assert_allclose(grad, nchw.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
