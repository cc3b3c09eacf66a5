"""Host-side preprocessing: geometry kept consistent, static padding, bad records, vocabulary."""
import logging

import numpy as np
import pytest

from research.data import preprocess as pp
from research.data import shapes_scene


def _example(seed, image_size=64):
  """A shapes example as `tfds.data_source` returns it (lists of arrays, bytes captions)."""
  s = shapes_scene.generate_scene(seed, image_size=image_size)
  x0, y0, x1, y1 = (s.boxes / image_size).T
  return s, {
      "image": s.image, "image/id": 17, "label": s.label,
      "objects": {"bbox": list(np.stack([y0, x0, y1, x1], -1)), "label": list(s.labels),
                  "area": list(s.areas), "is_crowd": [False] * len(s.labels)},
      "segmentation_mask": s.class_mask[..., None],
      "captions": {"text": [c.encode() for c in s.captions], "id": list(range(len(s.captions)))},
  }


def _single_object_examples(n=12, image_size=64):
  out = []
  for i in range(400):
    scene, ex = _example((3, i), image_size)
    if len(scene.labels) == 1:
      out.append(pp.validate(ex, "shapes"))
    if len(out) == n:
      return out
  raise AssertionError("too few single-object scenes")


def _mask_box(mask):
  """Pixel xyxy (edges) tightly bounding the nonzero pixels of mask [H, W, 1]."""
  rows, cols = np.nonzero(mask[..., 0])
  return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


def test_validate_gives_canonical_arrays():
  scene, raw = _example((3, 0))
  ex = pp.validate(raw, "shapes", image_hw=(64, 64))
  n = len(scene.labels)
  assert ex["objects"]["bbox"].shape == (n, 4) and ex["objects"]["bbox"].dtype == np.float32
  assert ex["objects"]["label"].dtype == np.int64 and ex["objects"]["is_crowd"].dtype == np.bool_
  assert ex["captions"]["text"] == list(scene.captions)
  np.testing.assert_allclose(pp.bbox_to_pixels(ex["objects"]["bbox"], 64, 64), scene.boxes, atol=1e-4)


def test_hflip_flips_boxes_masks_and_captions_consistently():
  for ex in _single_object_examples():
    flipped = pp.hflip(ex)
    np.testing.assert_array_equal(flipped["image"], ex["image"][:, ::-1])
    box = pp.bbox_to_pixels(flipped["objects"]["bbox"][0], 64, 64)
    np.testing.assert_allclose(_mask_box(flipped["segmentation_mask"]), box, atol=1e-4)
    twice = pp.hflip(flipped)
    np.testing.assert_allclose(twice["objects"]["bbox"], ex["objects"]["bbox"], atol=1e-6)
    assert twice["captions"]["text"] == ex["captions"]["text"]
  caption = {"text": ["a red square to the left of a blue circle on the right"]}
  assert pp.hflip(dict(ex, captions=caption))["captions"]["text"] == [
      "a red square to the right of a blue circle on the left"]
  rng = np.random.default_rng(0)
  flips = [pp.random_hflip(ex, rng)["image"] is not ex["image"] for _ in range(200)]
  assert 60 < sum(flips) < 140


@pytest.mark.parametrize("size,keep_aspect", [(96, False), (40, False), ((48, 80), False), (96, True)])
def test_resize_keeps_boxes_on_the_mask(size, keep_aspect):
  th, tw = (size, size) if isinstance(size, int) else size
  for ex in _single_object_examples(6):
    out = pp.resize(ex, size, keep_aspect)
    assert out["image"].shape == (th, tw, 3) and out["image"].dtype == np.uint8
    assert out["segmentation_mask"].shape == (th, tw, 1)
    assert set(np.unique(out["segmentation_mask"])) <= set(np.unique(ex["segmentation_mask"]))
    box = pp.bbox_to_pixels(out["objects"]["bbox"][0], th, tw)
    mask_box = _mask_box(out["segmentation_mask"])
    # The box encloses the mask: a nearest-sampled pixel whose centre is in the box reaches at most
    # half a pixel out of it.
    assert (mask_box[:2] >= box[:2] - 0.5).all() and (mask_box[2:] <= box[2:] + 0.5).all()
    # And bounds it tightly: sampling can skip one source row / column at an edge.
    scale = np.array([tw, th, tw, th]) / 64
    assert (np.abs(mask_box - box) <= 0.5 + np.maximum(scale, 1.0)).all(), (mask_box, box)


def test_resize_keep_aspect_pads_and_rescales_boxes():
  image = np.zeros((30, 60, 3), np.uint8)
  mask = np.zeros((30, 60, 1), np.uint8)
  mask[6:12, 30:48] = 1
  image[6:12, 30:48] = 200
  bbox = np.array([[6 / 30, 30 / 60, 12 / 30, 48 / 60]], np.float32)
  ex = pp.validate({"image": image, "image/id": 1, "segmentation_mask": mask,
                    "objects": {"bbox": bbox, "label": [0]}}, "synthetic")
  out = pp.resize(ex, 120, keep_aspect=True)  # 30x60 -> 60x120, then 60 rows of padding
  assert out["image"].shape == (120, 120, 3) and not out["image"][60:].any()
  np.testing.assert_array_equal(_mask_box(out["segmentation_mask"]), [60, 12, 96, 24])
  np.testing.assert_allclose(pp.bbox_to_pixels(out["objects"]["bbox"][0], 120, 120), [60, 12, 96, 24], atol=1e-4)


def test_normalize():
  ex = {"image": np.full((2, 2, 3), 255, np.uint8)}
  out = pp.normalize(ex, mean=(0.5, 0.5, 0.0), std=(0.5, 0.25, 1.0))
  assert out["image"].dtype == np.float32
  np.testing.assert_allclose(out["image"][0, 0], [1.0, 2.0, 1.0])


def test_pad_objects_to_static_shape_with_validity_mask():
  _, raw = _example((3, 5))
  ex = pp.validate(raw, "shapes")
  n = len(ex["objects"]["bbox"])
  out = pp.pad_objects(ex, 6)["objects"]
  assert out["bbox"].shape == (6, 4) and out["label"].shape == out["valid"].shape == (6,)
  np.testing.assert_array_equal(out["valid"], np.arange(6) < n)
  np.testing.assert_array_equal(out["bbox"][:n], ex["objects"]["bbox"])
  assert not out["bbox"][n:].any() and not out["is_crowd"][n:].any()
  cut = pp.pad_objects(ex, 1)["objects"]
  assert cut["valid"].tolist() == [True] and np.array_equal(cut["bbox"][0], ex["objects"]["bbox"][0])
  empty = pp.pad_objects(pp.validate(dict(raw, objects={"bbox": [], "label": []}), "shapes"), 3)
  assert empty["objects"]["bbox"].shape == (3, 4) and not empty["objects"]["valid"].any()


def test_bad_boxes_are_clipped_or_dropped():
  _, raw = _example((3, 0))
  raw = dict(raw, objects={
      "bbox": [[-0.2, 0.1, 0.5, 1.3],   # outside the image: clipped
               [0.2, 0.6, 0.4, 0.3],    # x2 < x1: dropped
               [1.1, 0.2, 1.4, 0.5],    # wholly below the image: empty after clipping, dropped
               [0.3, 0.3, 0.3, 0.6],    # zero height: dropped
               [np.nan, 0, 0.5, 0.5],   # not finite: dropped
               [0.1, 0.2, 0.3, 0.4]],
      "label": [0, 1, 2, 0, 1, 2], "area": [1, 2, 3, 4, 5, 6], "is_crowd": [False] * 6})
  objects = pp.validate(raw, "shapes")["objects"]
  np.testing.assert_allclose(objects["bbox"], [[0, 0.1, 0.5, 1.0], [0.1, 0.2, 0.3, 0.4]])
  assert objects["label"].tolist() == [0, 2] and objects["area"].tolist() == [1, 6]


@pytest.mark.parametrize("change,reason", [
    ({"image": np.zeros((64, 64), np.uint8)}, "image has shape"),
    ({"image": np.zeros((64, 64, 4), np.uint8)}, "image has shape"),
    ({"image": np.zeros((32, 64, 3), np.uint8)}, "expected (64, 64)"),
    ({"segmentation_mask": np.zeros((32, 32, 1), np.uint8)}, "segmentation_mask"),
    ({"captions": {"text": [b"a red square", b"  "], "id": [1, 2]}}, "empty caption"),
    ({"objects": {"bbox": [[0, 0, 1, 1]], "label": [0, 1]}}, "differ in length"),
])
def test_bad_records_are_rejected_with_dataset_and_id(change, reason):
  _, raw = _example((3, 0))
  with pytest.raises(pp.BadRecordError) as e:
    pp.validate(dict(raw, **change), "shapes/64", image_hw=(64, 64))
  message = str(e.value)
  assert reason in message and "'shapes/64'" in message and "example 17" in message


def test_validated_source_replaces_bad_records_deterministically(caplog):
  records = [_example((3, i))[1] for i in range(4)]
  records = [dict(r, **{"image/id": i}) for i, r in enumerate(records)]
  records[1] = dict(records[1], image=np.zeros((64, 64, 1), np.uint8))
  source = pp.ValidatedSource(records, "shapes")
  with caplog.at_level(logging.WARNING):
    ids = [source[i]["image/id"] for i in range(4)] + [source[1]["image/id"]]
  assert ids == [0, 2, 2, 3, 2]
  assert sum("example 1:" in r.message for r in caplog.records) == 1
  with pytest.raises(pp.BadRecordError, match="none of the 1 records"):
    pp.ValidatedSource(records[1:2], "shapes")[0]


def test_vocabulary_round_trip(tmp_path):
  train = [c for i in range(200) for c in shapes_scene.generate_scene((0, i)).captions]
  vocab = pp.Vocabulary.build(train, min_count=2)
  assert vocab.tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
  assert {"red", "circle", "triangles", "left", "above", "background"} <= set(vocab.tokens)
  assert pp.Vocabulary.build(reversed(train), min_count=2).tokens == vocab.tokens
  for text in train[:50]:
    ids, mask = vocab.encode(text, 32)
    assert ids.dtype == np.int32 and mask.dtype == np.bool_ and ids.shape == (32,)
    n = len(pp.Vocabulary.tokenize(text)) + 2
    assert mask.tolist() == [True] * n + [False] * (32 - n) and ids[0] == vocab.BOS and ids[n - 1] == vocab.EOS
    assert vocab.decode(ids) == " ".join(pp.Vocabulary.tokenize(text))
  ids, _ = vocab.encode("A Zebra, and a red circle!", 5)
  assert vocab.decode(ids) == "a <unk> and" and ids[-1] == vocab.EOS
  path = str(tmp_path / "vocab.json")
  vocab.save(path)
  assert pp.Vocabulary.load(path).tokens == vocab.tokens
  rare = pp.Vocabulary.build(["a a b"], min_count=2)
  assert rare.tokens[4:] == ["a"] and len(pp.Vocabulary.build(train, max_size=10)) == 10


def test_caption_encoding_static_shapes():
  _, raw = _example((3, 1))
  ex = pp.validate(raw, "shapes")
  vocab = pp.Vocabulary.build(pp.caption_texts([raw]))
  out = pp.encode_captions(ex, vocab, length=24, max_captions=7)["captions"]
  assert out["tokens"].shape == out["token_mask"].shape == (7, 24) and out["valid"].shape == (7,)
  assert out["valid"].tolist() == [True] * 5 + [False] * 2 and not out["tokens"][5:].any()
  assert [vocab.decode(t) for t in out["tokens"][:5]] == [
      " ".join(pp.Vocabulary.tokenize(t)) for t in ex["captions"]["text"]]
  one = pp.select_caption(ex, np.random.default_rng(1))
  assert len(one["captions"]["text"]) == 1 and one["captions"]["text"][0] in ex["captions"]["text"]
  assert pp.encode_captions(one, vocab, 24, 1)["captions"]["tokens"].shape == (1, 24)


def test_adapters_map_real_datasets_to_the_shapes_layout():
  image = np.zeros((100, 200, 3), np.uint8)
  coco = {"image": image, "image/id": 139, "image/filename": b"000000000139.jpg",
          "objects": {"id": [1, 2], "area": [50, 60], "bbox": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9]],
                      "label": [0, 79], "is_crowd": [False, True]}}
  out = pp.validate(pp.adapt("coco/2017", coco), "coco/2017")
  assert set(out) == {"image", "image/id", "objects"} and out["image/id"] == 139
  assert set(out["objects"]) == {"bbox", "label", "area", "is_crowd"}
  assert out["objects"]["is_crowd"].tolist() == [False, True]
  captioned = dict(coco, captions={"text": [b"a cat on a mat"], "id": [5]})
  out = pp.validate(pp.adapt("coco_captions", captioned), "coco_captions")
  assert out["captions"]["text"] == ["a cat on a mat"] and out["objects"]["label"].tolist() == [0, 79]
  voc = {"image": image, "image/filename": b"2008_000002.jpg",
         "objects": {"label": [14], "bbox": [[0.1, 0.2, 0.5, 0.7]], "pose": [0],
                     "is_truncated": [False], "is_difficult": [True]},
         "labels": [14], "labels_no_difficult": []}
  out = pp.validate(pp.adapt("voc/2012", voc), "voc/2012")
  assert out["image/id"] == 2008000002 and out["objects"]["area"].tolist() == [4000]
  assert out["objects"]["is_crowd"].tolist() == [True]
  _, shapes = _example((3, 0))
  assert pp.adapt("shapes/128", shapes) is shapes
  with pytest.raises(ValueError, match="no adapter"):
    pp.adapt("mnist", shapes)


def _jpeg(height, width, mode="RGB"):
  import io
  from PIL import Image
  rng = np.random.default_rng(height * width)
  yy, xx = np.mgrid[0:height, 0:width]
  pixels = np.stack([(yy * 3) % 256, (xx * 2) % 256, (yy + xx) % 256], -1) + rng.integers(0, 20, (height, width, 3))
  image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode)
  out = io.BytesIO()
  image.save(out, format="JPEG", quality=90)
  return out.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_crop_and_resize_of_jpeg_bytes_equals_decode_crop_resize(mode):
  """Without draft (crop < 2x the output) the bytes path gives exactly the array path's pixels,
  which are PIL's resize of the crop's width, then of its height, per channel (as TFDS decodes:
  grey as [H, W, 1])."""
  from PIL import Image
  data = _jpeg(70, 90, mode)
  decoded = pp.decode_image(data)
  assert decoded.shape == (70, 90, 3 if mode == "RGB" else 1) and pp.image_hw(data) == (70, 90)
  box, size = (5, 11, 50, 63), (32, 40)
  crop = decoded[5:55, 11:74]
  expected = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(crop[..., c])).resize((40, 50), Image.BILINEAR)
                                  .resize((40, 32), Image.BILINEAR)) for c in range(crop.shape[-1])], -1)
  np.testing.assert_array_equal(pp.crop_and_resize(data, box, size), expected)
  np.testing.assert_array_equal(pp.crop_and_resize(decoded, box, size), expected)
  opened = pp.open_encoded(data)  # the header parsed once for image_hw and the crop
  assert pp.image_hw(opened) == (70, 90)
  np.testing.assert_array_equal(pp.crop_and_resize(opened, box, size), expected)
  # a grey JPEG of a 3-channel feature (ImageNet's few grey photos) is repeated, as TFDS decodes it
  np.testing.assert_array_equal(pp.crop_and_resize(data, box, size, channels=3), np.repeat(expected, 3, -1)
                                if mode == "L" else expected)


def test_crop_and_resize_decodes_large_crops_at_reduced_size():
  """A crop >= 4x the output on both sides decodes at 1/4 scale: close to the full decode's result."""
  data = _jpeg(260, 300)
  box, size = (8, 20, 240, 260), (32, 32)
  full = pp.crop_and_resize(pp.decode_image(data), box, size).astype(np.float64)
  reduced = pp.crop_and_resize(data, box, size).astype(np.float64)
  assert reduced.shape == (32, 32, 3)
  assert np.abs(reduced - full).mean() < 6.0 and not np.array_equal(reduced, full)


def test_normalize_table_equals_arithmetic():
  image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  scale = (1.0 / (255.0 * np.asarray(std, np.float32))).astype(np.float32)
  shift = (-np.asarray(mean, np.float32) / np.asarray(std, np.float32)).astype(np.float32)
  out = pp.NormalizeTable(mean, std)(image[:, ::-1])
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, image[:, ::-1] * scale + shift)
  grey = pp.NormalizeTable((0.5,), (0.25,))(image[..., :1])
  grey_scale = (1.0 / (255.0 * np.asarray([0.25], np.float32))).astype(np.float32)
  np.testing.assert_array_equal(grey, image[..., :1] * grey_scale + np.float32(-2.0))


@pytest.mark.parametrize("channels", [1, 3, 2])
def test_native_resize_equals_pil_width_then_height(channels):
  """research/data/native/resize.cc gives PIL's numbers to the bit (Image.resize of the width,
  then of the height) for enlarging and reducing, strided crops of a larger image, and odd sizes;
  one Image.resize call differs from it by at most 1 (Pillow 13 runs its passes in either order)."""
  from PIL import Image
  from research.data import native_resize
  assert native_resize._native() is not None  # the library builds here: the test compares it
  rng = np.random.default_rng(channels)
  for _ in range(40):
    in_h, in_w = (int(v) for v in rng.integers(1, 130, 2))
    out_h, out_w = (int(v) for v in rng.integers(1, 110, 2))
    full = rng.integers(0, 256, (in_h + 9, in_w + 5, channels), np.uint8)
    top, left = int(rng.integers(0, 10)), int(rng.integers(0, 6))
    crop = full[top:top + in_h, left:left + in_w]  # a strided view: read in place
    native = native_resize.resize(crop, out_h, out_w)
    np.testing.assert_array_equal(native, native_resize.resize(crop, out_h, out_w, native=False))
    for c in range(channels):
      plane = Image.fromarray(np.ascontiguousarray(crop[..., c]))
      two_passes = plane.resize((out_w, in_h), Image.BILINEAR).resize((out_w, out_h), Image.BILINEAR)
      np.testing.assert_array_equal(native[..., c], np.asarray(two_passes))
      one_call = np.asarray(plane.resize((out_w, out_h), Image.BILINEAR)).astype(int)
      assert np.abs(one_call - native[..., c]).max() <= 1
  with pytest.raises(ValueError, match="uint8"):
    native_resize.resize(np.zeros((4, 4, 3), np.float32), 2, 2)
