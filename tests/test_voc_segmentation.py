"""voc2012_segmentation: prepared offline from a fabricated VOCdevkit, read back exactly through
research.data.datasets, and preprocessed by the segmentation task (crops, ignore-label padding)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from research.config_sections import model_config, task_config
from research.core.config import default_config
from research.data import datasets
from research.data.builders.voc_segmentation import CLASS_NAMES, read_mask
from research.tasks.segmentation import SegmentationTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "voc2012_segmentation"
SPLIT_IDS = {"train": ["2007_000032", "2007_000039", "2008_000002"], "val": ["2007_000033", "2009_000012"]}
AUG_ONLY_IDS = ["2010_000005"]  # SBD images: in SegmentationClassAug, in neither train nor val


def _voc_palette() -> list[int]:
  """VOC's colour map (bit-interleaved class index), 256 RGB entries flattened."""
  palette = []
  for index in range(256):
    r = g = b = 0
    c = index
    for shift in range(7, -1, -1):
      r, g, b = r | ((c & 1) << shift), g | (((c >> 1) & 1) << shift), b | (((c >> 2) & 1) << shift)
      c >>= 3
    palette += [r, g, b]
  return palette


def _random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """Class indices 0..20 in blocks, with about 10% boundary pixels (255)."""
  mask = np.kron(rng.integers(0, len(CLASS_NAMES), (h // 4 + 1, w // 4 + 1)), np.ones((4, 4), np.int64))[:h, :w]
  mask[rng.random((h, w)) < 0.1] = 255
  return mask.astype(np.uint8)


def _fake_devkit(root: str) -> dict:
  """Writes root/VOCdevkit/VOC2012 with a few images and masks; returns {split: {id: (image
  [H, W, 3] as written, mask [H, W])}} for train, val and train_aug."""
  rng = np.random.default_rng(0)
  voc = os.path.join(root, "VOCdevkit", "VOC2012")
  for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
    os.makedirs(os.path.join(voc, sub))
  palette = _voc_palette()
  images, expected = {}, {"train": {}, "val": {}, "train_aug": {}}
  for voc_id in SPLIT_IDS["train"] + SPLIT_IDS["val"] + AUG_ONLY_IDS:
    h, w = (int(v) for v in rng.integers(20, 49, 2))
    ramp = np.linspace(0, 200, w)[None, :, None] + np.linspace(0, 50, h)[:, None, None]
    image = np.clip(ramp + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(voc, "JPEGImages", f"{voc_id}.jpg"), quality=95)
    images[voc_id] = image
  for split, ids in SPLIT_IDS.items():
    with open(os.path.join(voc, "ImageSets", "Segmentation", f"{split}.txt"), "w") as f:
      f.write("\n".join(ids) + "\n")
    for voc_id in ids:
      mask = _random_mask(rng, *images[voc_id].shape[:2])
      png = Image.fromarray(mask, mode="P")
      png.putpalette(palette)
      png.save(os.path.join(voc, "SegmentationClass", f"{voc_id}.png"))
      expected[split][voc_id] = (images[voc_id], mask)
  # Greyscale augmented masks, different from SegmentationClass so the test sees which is read; the
  # val image's one must be left out of train_aug.
  for voc_id in SPLIT_IDS["train"] + AUG_ONLY_IDS + SPLIT_IDS["val"][:1]:
    mask = _random_mask(rng, *images[voc_id].shape[:2])
    Image.fromarray(mask, mode="L").save(os.path.join(voc, "SegmentationClassAug", f"{voc_id}.png"))
    if voc_id not in SPLIT_IDS["val"]:
      expected["train_aug"][voc_id] = (images[voc_id], mask)
  return expected


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
  """(data_dir, devkit root, expected examples), prepared with research-prepare-data."""
  root = str(tmp_path_factory.mktemp("voc"))
  expected = _fake_devkit(root)
  data_dir = str(tmp_path_factory.mktemp("tfds_voc"))
  out = subprocess.run([sys.executable, "-m", "research.cli.prepare_data", NAME,
                        "--voc_dir", root, "--data_dir", data_dir], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return data_dir, root, expected


def test_splits_round_trip_exactly(voc):
  data_dir, root, expected = voc
  jpegs = os.path.join(root, "VOCdevkit", "VOC2012", "JPEGImages")
  for split, examples in expected.items():
    source = datasets.get_data_source(NAME, split, data_dir)
    assert len(source) == len(examples), split
    seen = set()
    for i in range(len(source)):
      ex = source[i]
      voc_id = ex["image/filename"].decode()[:-4]
      seen.add(voc_id)
      image, mask = examples[voc_id]
      assert ex["image/id"] == int(voc_id.replace("_", ""))
      assert ex["segmentation_mask"].shape == mask.shape + (1,) and ex["segmentation_mask"].dtype == np.uint8
      np.testing.assert_array_equal(ex["segmentation_mask"][..., 0], mask)  # indices, not palette colours
      assert ex["image"].shape == image.shape and ex["image"].dtype == np.uint8
      with Image.open(os.path.join(jpegs, f"{voc_id}.jpg")) as original:
        np.testing.assert_array_equal(ex["image"], np.asarray(original))  # the JPEG bytes are stored as is
      assert np.abs(ex["image"].astype(int) - image).mean() < 4  # and JPEG kept the picture
    assert seen == set(examples), split
  info = datasets.get_builder(NAME, data_dir).info
  assert list(info.metadata["class_names"]) == list(CLASS_NAMES)


def test_unprepared_dataset_error_names_the_offline_command(tmp_path):
  with pytest.raises(datasets.DatasetNotPreparedError) as e:
    datasets.get_data_source(NAME, "train", str(tmp_path))
  message = str(e.value)
  assert f"research-prepare-data {NAME} --source DIR" in message and "tfds build" not in message


def test_task_pads_crops_and_keeps_the_ignore_label(voc):
  data_dir = voc[0]
  config = default_config()
  config.model = model_config("fcn8s")
  config.dataset.name = NAME
  config.dataset.data_dir = data_dir
  config.task = task_config("segmentation", crop_size=48, augment=("scale", "flip"))
  task = SegmentationTask(config, datasets.get_builder(NAME, data_dir).info)
  assert task.num_classes == 21 and task._class_names()[1] == "aeroplane"

  val = task.wrap_source(datasets.get_data_source(NAME, "val", data_dir), "val")
  for i in range(len(val)):
    mask = val[i]["segmentation_mask"][..., 0]
    h, w = mask.shape
    out = task.preprocess_eval(val[i])
    assert out["image"].shape == (48, 48, 3) and out["image"].dtype == np.float32
    assert out["segmentation"].shape == (48, 48) and out["segmentation"].dtype == np.int32
    np.testing.assert_array_equal(out["segmentation"][:h, :w], mask)  # whole image, exact labels
    assert (out["segmentation"][h:] == 255).all() and (out["segmentation"][:, w:] == 255).all()
    assert (out["image"][h:] == 0).all() and (out["image"][:, w:] == 0).all()  # mean colour

  train = task.wrap_source(datasets.get_data_source(NAME, "train_aug", data_dir), "train_aug")
  rng = np.random.default_rng(0)
  for i in range(len(train)):
    values = set(np.unique(train[i]["segmentation_mask"]).tolist())
    for _ in range(3):
      out = task.preprocess_train(train[i], rng)
      assert out["image"].shape == (48, 48, 3) and out["segmentation"].shape == (48, 48)
      labels = set(np.unique(out["segmentation"]).tolist())
      assert 255 in labels and labels <= values | {255}  # nearest-neighbour: no new labels

  small = config.copy_and_resolve_references()
  small.task.crop_size = 16  # images larger than the crop are shrunk to fit in evaluation
  out = SegmentationTask(small, task.dataset_info).preprocess_eval(val[0])
  assert out["segmentation"].shape == (16, 16)
  assert set(np.unique(out["segmentation"]).tolist()) <= set(np.unique(val[0]["segmentation_mask"]).tolist()) | {255}


def test_read_mask_rejects_colour_masks_and_unknown_values(tmp_path):
  rgb = str(tmp_path / "rgb.png")
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
  with pytest.raises(ValueError, match="mode 'RGB'"):
    read_mask(rgb)
  bad = str(tmp_path / "bad.png")
  Image.fromarray(np.full((4, 4), 30, np.uint8), mode="L").save(bad)
  with pytest.raises(ValueError, match=r"\[30\]"):
    read_mask(bad)
