"""The procedural `shapes` dataset against its own ground truth, and its TFDS builder."""
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from research.data import shapes_scene
from research.data.builders.shapes import Builder, ShapesConfig
from research.data.builders.shapes import shapes_dataset_builder as sdb

SCENES = [shapes_scene.generate_scene((7, i)) for i in range(150)]


def _fields(scene):
  return [scene.image, scene.class_mask, scene.instance_mask, scene.boxes, scene.labels,
          scene.areas]


def test_same_seed_same_bytes_and_seeds_differ():
  for i in range(5):
    a, b = shapes_scene.generate_scene((7, i)), SCENES[i]
    assert all(x.tobytes() == y.tobytes() and x.dtype == y.dtype for x, y in zip(_fields(a), _fields(b)))
    assert a.captions == b.captions
  assert len({s.image.tobytes() for s in SCENES}) == len(SCENES)
  big = shapes_scene.generate_scene((7, 0), image_size=128)
  assert big.image.shape == (128, 128, 3) and big.class_mask.shape == (128, 128)


def test_boxes_tightly_bound_visible_pixels_and_masks_agree():
  for s in SCENES:
    n = len(s.labels)
    assert 1 <= n <= 4 and s.boxes.shape == (n, 4) and s.image.shape == (64, 64, 3)
    assert s.image.dtype == s.class_mask.dtype == np.uint8
    np.testing.assert_array_equal(s.class_mask == 0, s.instance_mask == 0)
    for k in range(n):
      rows, cols = np.nonzero(s.instance_mask == k + 1)
      np.testing.assert_array_equal(s.boxes[k], [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
      assert s.areas[k] == len(rows) > 0
      assert (s.class_mask[rows, cols] == s.labels[k] + 1).all()
      assert len(set(map(tuple, s.image[rows, cols]))) == 1  # one flat colour per object
    assert s.instance_mask.max() == n


def test_label_is_the_largest_visible_object():
  for s in SCENES:
    assert s.label == s.labels[int(np.argmax(s.areas))]
  assert {s.label for s in SCENES} == {0, 1, 2}
  counts = np.bincount([len(s.labels) for s in SCENES])
  assert (counts[1:] > 0).all()  # 1..4 objects all occur, with occlusion
  assert any(_occluded(s) for s in SCENES)


def _occluded(s):
  """Whether a later object covers pixels inside the box of an earlier one."""
  for k, (x0, y0, x1, y1) in enumerate(s.boxes.astype(int)):
    if (s.instance_mask[y0:y1, x0:x1] > k + 1).any():
      return True
  return False


def _colors(caption):
  return [w for w in re.findall(r"[a-z]+", caption) if w in shapes_scene.COLOR_NAMES]


def _shapes(caption):
  """Shape words, plurals made singular."""
  words = [w[:-1] if w.endswith("s") else w for w in re.findall(r"[a-z]+", caption)]
  return [w for w in words if w in shapes_scene.CLASS_NAMES]


def test_captions_mention_the_objects_present():
  for s in SCENES:
    assert len(s.captions) == shapes_scene.NUM_CAPTIONS and all(s.captions)
    colors, shapes = set(s.colors), {shapes_scene.CLASS_NAMES[c] for c in s.labels}
    for caption in s.captions:
      assert set(_colors(caption)) <= colors and set(_shapes(caption)) <= shapes, caption
    listing = s.captions[0]  # every object, once
    assert sorted(_colors(listing)) == sorted(s.colors), listing
    assert sorted(_shapes(listing)) == sorted(
        shapes_scene.CLASS_NAMES[c] for c in s.labels), listing
    assert s.captions[4].endswith(f"on a {s.background} background")


def test_relations_follow_geometry():
  checked = 0
  for s in SCENES:
    if len(s.labels) != 2:
      continue
    a, b = np.argsort(-s.areas, kind="stable")
    (ax, ay), (bx, by) = (s.boxes[a, :2] + s.boxes[a, 2:]) / 2, (s.boxes[b, :2] + s.boxes[b, 2:]) / 2
    if abs(ax - bx) >= abs(ay - by):
      expected = "to the left of" if ax < bx else "to the right of"
    else:
      expected = "above" if ay < by else "below"
    caption = s.captions[2]
    first = f"{s.sizes[a]} {s.colors[a]} {shapes_scene.CLASS_NAMES[s.labels[a]]}"
    second = f"{s.colors[b]} {shapes_scene.CLASS_NAMES[s.labels[b]]}"
    assert re.sub(r"\b(a|an) ", "", caption) == f"{first} {expected} {second}", caption
    checked += 1
  assert checked > 10


def test_default_configs_and_split_sizes():
  configs = {c.name: c for c in Builder.BUILDER_CONFIGS}
  assert list(configs) == ["64", "128"]
  assert configs["64"].image_size == 64 and configs["128"].image_size == 128
  for c in configs.values():
    assert dict(c.split_sizes) == {"train": 2000, "validation": 300, "test": 300}


def _build(data_dir, name, image_size=64):
  config = ShapesConfig(name=name, image_size=image_size,
                        split_sizes=(("train", 6), ("validation", 3)))
  Builder(data_dir=str(data_dir), file_format="array_record", config=config).download_and_prepare()
  return tfds.data_source(f"shapes/{name}", data_dir=str(data_dir))


@pytest.mark.parametrize("image_size", [64, 128])
def test_tfds_build_and_read_back(tmp_path, image_size):
  source = _build(tmp_path, f"tiny{image_size}", image_size)
  assert (len(source["train"]), len(source["validation"])) == (6, 3)
  seen = set()
  for split, seed in [("train", 0), ("validation", 1)]:
    for i in range(len(source[split])):
      ex = source[split][i]
      index = ex["image/id"] - sdb.SPLIT_ID_OFFSETS[split]
      seen.add((split, index))
      scene = shapes_scene.generate_scene((seed, index), image_size=image_size)
      np.testing.assert_array_equal(ex["image"], scene.image)
      np.testing.assert_array_equal(ex["segmentation_mask"][..., 0], scene.class_mask)
      assert ex["label"] == scene.label
      bbox = np.asarray(ex["objects"]["bbox"])
      x0, y0, x1, y1 = (scene.boxes / image_size).T
      np.testing.assert_allclose(bbox, np.stack([y0, x0, y1, x1], -1), atol=1e-6)
      np.testing.assert_array_equal(ex["objects"]["label"], scene.labels)
      np.testing.assert_array_equal(ex["objects"]["area"], scene.areas)
      assert not np.any(ex["objects"]["is_crowd"])
      assert [t.decode() for t in ex["captions"]["text"]] == list(scene.captions)
      assert len(set(ex["captions"]["id"])) == shapes_scene.NUM_CAPTIONS
  assert len(seen) == 9


def test_builds_are_deterministic_across_runs(tmp_path):
  first = _build(tmp_path / "a", "tiny")["train"]
  second = _build(tmp_path / "b", "tiny")["train"]
  for i in range(len(first)):
    assert first[i]["image/id"] == second[i]["image/id"]
    assert first[i]["image"].tobytes() == second[i]["image"].tobytes()
