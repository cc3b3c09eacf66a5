"""ImageNet-style preprocessing of the classification task against torchvision.transforms:
RandomResizedCrop (crop box distribution, fallback, resampling) and Resize + CenterCrop."""
import numpy as np
import pytest
from PIL import Image

from research.config_sections import model_config, task_config
from research.core.config import ConfigError, default_config
from research.tasks.classification import (ClassificationTask, random_resized_crop_box, resize_image,
                                           resize_shorter_center_crop)

torch = pytest.importorskip("torch")
transforms = pytest.importorskip("torchvision.transforms")
F = pytest.importorskip("torchvision.transforms.functional")


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("hw", [(75, 100), (101, 67), (64, 64)])
def test_resize_shorter_center_crop_equals_torchvision(hw):
  image = _image(*hw)
  ref = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(56)])(Image.fromarray(image))
  np.testing.assert_array_equal(resize_shorter_center_crop(image, 64, 56), np.asarray(ref))


def test_resized_crop_resampling_equals_torchvision():
  image = _image(90, 120)
  top, left, h, w = 10, 23, 51, 70
  ref = F.resized_crop(Image.fromarray(image), top, left, h, w, [32, 32], transforms.InterpolationMode.BILINEAR)
  np.testing.assert_array_equal(resize_image(image[top:top + h, left:left + w], 32, 32), np.asarray(ref))


def test_crop_box_distribution_matches_torchvision():
  height, width, n = 300, 400, 2000
  rng = np.random.default_rng(0)
  ours = np.array([random_resized_crop_box(height, width, rng) for _ in range(n)], np.float64)
  torch.manual_seed(0)
  theirs = np.array([transforms.RandomResizedCrop.get_params(torch.zeros(3, height, width), [0.08, 1.0], [3 / 4, 4 / 3])
                     for _ in range(n)], np.float64)
  for boxes in (ours, theirs):
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
  stats = lambda b: (b[:, 2] * b[:, 3] / (height * width), np.log(b[:, 3] / b[:, 2]))  # noqa: E731
  (area, log_ratio), (ref_area, ref_log_ratio) = stats(ours), stats(theirs)
  assert area.min() >= 0.07 and area.max() <= 1.0
  assert np.abs(log_ratio).max() <= np.log(4 / 3) + 0.05
  assert area.mean() == pytest.approx(ref_area.mean(), abs=0.03)
  assert log_ratio.std() == pytest.approx(ref_log_ratio.std(), abs=0.02)


@pytest.mark.parametrize("hw,ratio", [((10, 400), (3 / 4, 4 / 3)), ((400, 10), (3 / 4, 4 / 3)), ((50, 60), (3.0, 4.0))])
def test_crop_box_fallback_equals_torchvision(hw, ratio):
  # No crop of 99.9% of the area fits the ratio range: both take the centre crop clamped to the range.
  scale = (0.999, 1.0)
  ours = random_resized_crop_box(*hw, np.random.default_rng(0), scale, ratio)
  theirs = transforms.RandomResizedCrop.get_params(torch.zeros(3, *hw), list(scale), list(ratio))
  assert ours == tuple(theirs)


def _task(**task_overrides) -> ClassificationTask:
  config = default_config()
  config.model = model_config("lenet5")
  config.task = task_config("classification", num_classes=3, channels=1, **task_overrides)
  return ClassificationTask(config)


def test_task_random_resized_crop_and_eval_resize():
  task = _task(image_size=28, augment=("random_resized_crop", "flip"), eval_resize=32)
  example = {"image": _image(50, 70), "label": 2}
  train = task.preprocess_train(example, np.random.default_rng(0))
  evaluated = task.preprocess_eval(example)
  assert train["image"].shape == (28, 28, 1) and train["image"].dtype == np.uint8 and train["flip"].shape == ()
  assert evaluated["image"].shape == (28, 28, 1) and evaluated["image"].dtype == np.float32
  assert train["label"] == evaluated["label"] == 2
  grey = _image(50, 70).mean(axis=-1, keepdims=True).astype(np.uint8)
  np.testing.assert_allclose(evaluated["image"], resize_shorter_center_crop(grey, 32, 28) / 255.0, rtol=1e-6)


@pytest.mark.parametrize("overrides,message", [
    ({"augment": ("random_resized_crop",)}, "image_size"),
    ({"image_size": 32, "eval_resize": 28}, "eval_resize"),
    ({"augment": ("cutout",)}, "cutout"),
])
def test_task_rejects_inconsistent_settings(overrides, message):
  with pytest.raises(ConfigError, match=message):
    _task(**overrides)
