"""Host-side numpy preprocessing for detection, segmentation and captioning (Grain map ops).

Every op takes and returns an example dict in one canonical layout: the features of TFDS `shapes`,
which are those of coco / voc / coco_captions (`adapt` maps those datasets onto it):

  image              uint8 [H, W, 3] (float32 after `normalize`)
  image/id           int, the example's id (named in every error)
  label              int, whole-image class (shapes only)
  objects            dict of per-object arrays, N objects:
    bbox             float32 [N, 4], TFDS BBoxFeature convention: [ymin, xmin, ymax, xmax]
                     normalized by the image height / width to [0, 1]
    label            int64 [N];  area int64 [N] and is_crowd bool [N] where the dataset has them
  segmentation_mask  uint8 [H, W, 1]; 0 background, class + 1 on objects (shapes only)
  captions           dict: text, a list of K str; id int64 [K]

`validate` comes first: it turns what `tfds.data_source` returns (lists, bytes) into this layout,
repairs what the box convention allows and rejects the rest with `BadRecordError`. Ops touch only
the keys an example has, so one chain serves every dataset. Boxes stay normalized throughout:
resizing the whole image leaves them unchanged; `bbox_to_pixels` gives xyxy pixel boxes.

Typical chains:
  train: validate -> resize -> random_hflip -> normalize -> pad_objects / select_caption +
         encode_captions
  eval:  validate -> resize -> normalize -> pad_objects / encode_captions
"""
from __future__ import annotations

import collections
import io
import json
import logging
import re
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Union

import numpy as np
from PIL import Image

from research.data import native_resize

Example = Dict[str, Any]


class BadRecordError(ValueError):
  """A record that cannot be repaired; the message names the dataset and the example id."""

  def __init__(self, dataset: str, example_id: Any, reason: str):
    super().__init__(f"bad record in dataset {dataset!r}, example {example_id}: {reason}")
    self.dataset, self.example_id, self.reason = dataset, example_id, reason


def _example_id(example: Example) -> Any:
  return example.get("image/id", example.get("image/filename", "<no id>"))


def _text(value: Union[str, bytes]) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# --- validation and repair ---------------------------------------------------------------------
def validate(example: Example, dataset: str, image_hw: Optional[tuple[int, int]] = None,
             channels: int = 3) -> Example:
  """The example in canonical layout (numpy arrays, str captions), repaired or rejected.

  Repairs (the box convention allows them): boxes are clipped to [0, 1]; a box that is empty
  after clipping (xmax <= xmin or ymax <= ymin, e.g. x2 < x1, or wholly outside the image) or not
  finite is dropped together with its label, area and is_crowd. Areas of the kept boxes are left
  as the dataset gave them.
  Rejections (BadRecordError): an image that is not [H, W, channels] (or not `image_hw`, where
  given), a segmentation mask whose size differs from the image's, per-object fields of different
  lengths, an empty caption.
  """
  out = dict(example)
  eid = _example_id(example)
  image = np.asarray(example["image"])
  if image.ndim != 3 or image.shape[-1] != channels or 0 in image.shape:
    raise BadRecordError(dataset, eid, f"image has shape {image.shape}, expected [H, W, {channels}]")
  if image_hw is not None and image.shape[:2] != tuple(image_hw):
    raise BadRecordError(dataset, eid, f"image is {image.shape[:2]}, expected {tuple(image_hw)}")
  out["image"] = image
  if "segmentation_mask" in example:
    mask = np.asarray(example["segmentation_mask"])
    mask = mask[..., None] if mask.ndim == 2 else mask
    if mask.shape != image.shape[:2] + (1,):
      raise BadRecordError(dataset, eid, f"segmentation_mask is {mask.shape}, image {image.shape}")
    out["segmentation_mask"] = mask
  if "objects" in example:
    out["objects"] = _repair_objects(example["objects"], dataset, eid)
  if "captions" in example:
    texts = [_text(t) for t in example["captions"]["text"]]
    if any(not t.strip() for t in texts):
      raise BadRecordError(dataset, eid, f"empty caption among {texts}")
    out["captions"] = dict(example["captions"], text=texts)
    if "id" in example["captions"]:
      out["captions"]["id"] = np.asarray(example["captions"]["id"], np.int64).reshape(-1)
  return out


_OBJECT_DTYPES = {"bbox": np.float32, "label": np.int64, "area": np.int64, "is_crowd": np.bool_}


def _repair_objects(objects: Example, dataset: str, eid: Any) -> Example:
  fields = {k: np.asarray(v, _OBJECT_DTYPES.get(k)) for k, v in objects.items()}
  fields["bbox"] = fields["bbox"].reshape(-1, 4)
  n = len(fields["bbox"])
  lengths = {k: len(v) for k, v in fields.items()}
  if any(length != n for length in lengths.values()):
    raise BadRecordError(dataset, eid, f"objects fields differ in length: {lengths}")
  bbox = np.clip(fields["bbox"], 0.0, 1.0)
  keep = np.isfinite(fields["bbox"]).all(axis=1) & (bbox[:, 2] > bbox[:, 0]) & (bbox[:, 3] > bbox[:, 1])
  fields["bbox"] = bbox
  return {k: v[keep] for k, v in fields.items()}


class ValidatedSource:
  """A data source of adapted, validated examples (`adapt` then `validate`), such that one bad
  record never stops a run: a record that raises `BadRecordError` is logged once and replaced by
  the next good one (index + 1, + 2, ... wrapping around), the same one in every epoch and run.
  """

  def __init__(self, source: Any, dataset: str, image_hw: Optional[tuple[int, int]] = None):
    """source: random access (len, getitem), e.g. tfds.data_source(dataset)[split]; dataset: its
    TFDS name; image_hw: the fixed image size where the dataset has one."""
    self.source, self.dataset, self.image_hw = source, dataset, image_hw
    self._reported: set = set()

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> Example:
    n = len(self.source)
    for offset in range(n):
      try:
        return validate(adapt(self.dataset, self.source[(index + offset) % n]), self.dataset, self.image_hw)
      except BadRecordError as e:
        if e.example_id not in self._reported:
          self._reported.add(e.example_id)
          logging.warning("%s; using the next record instead", e)
    raise BadRecordError(self.dataset, "<all>", f"none of the {n} records is usable")


# --- geometry ------------------------------------------------------------------------------------
def bbox_to_pixels(bbox: np.ndarray, height: int, width: int) -> np.ndarray:
  """[..., 4] normalized [ymin, xmin, ymax, xmax] -> float32 [..., 4] pixel xyxy (edges, x2 = x1 + w)."""
  bbox = np.asarray(bbox, np.float32)
  return np.stack([bbox[..., 1] * width, bbox[..., 0] * height,
                   bbox[..., 3] * width, bbox[..., 2] * height], axis=-1)


def _resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of [H, W, ...] by pixel centres (labels are never blended)."""
  rows = np.minimum(((np.arange(height) + 0.5) * array.shape[0] / height).astype(np.int64), array.shape[0] - 1)
  cols = np.minimum(((np.arange(width) + 0.5) * array.shape[1] / width).astype(np.int64), array.shape[1] - 1)
  return array[rows][:, cols]


def _pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
  """Zero-pads [h, w, C] at the bottom and right to [height, width, C]."""
  if array.shape[:2] == (height, width):
    return array
  out = np.zeros((height, width) + array.shape[2:], array.dtype)
  out[:array.shape[0], :array.shape[1]] = array
  return out


def resize(example: Example, size: Union[int, tuple[int, int]], keep_aspect: bool = False) -> Example:
  """Resizes a uint8 image (bilinear) and segmentation_mask (nearest) to size = (height, width) or S.

  keep_aspect=False stretches to the size; normalized boxes are unchanged. keep_aspect=True scales
  by min(height / H, width / W), then pads the bottom and right with zeros (mask: background) up to
  the size; boxes are rescaled to stay on their objects.
  """
  th, tw = (size, size) if isinstance(size, int) else size
  image = example["image"]
  h, w = image.shape[:2]
  if keep_aspect:
    scale = min(th / h, tw / w)
    nh, nw = max(1, min(th, round(h * scale))), max(1, min(tw, round(w * scale)))
  else:
    nh, nw = th, tw
  out = dict(example)
  if (nh, nw) != (h, w):
    image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
  out["image"] = _pad_to(image, th, tw)
  if "segmentation_mask" in example:
    out["segmentation_mask"] = _pad_to(_resize_nearest(example["segmentation_mask"], nh, nw), th, tw)
  if "objects" in example and (nh, nw) != (th, tw):
    factor = np.array([nh / th, nw / tw, nh / th, nw / tw], np.float32)
    out["objects"] = dict(example["objects"], bbox=example["objects"]["bbox"] * factor)
  return out


_LEFT_RIGHT = re.compile(r"\b(left|right)\b")


def _swap_left_right(text: str) -> str:
  return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1) == "left" else "left", text)


def hflip(example: Example) -> Example:
  """Mirrors image, segmentation_mask and boxes left-right (xmin' = 1 - xmax, xmax' = 1 - xmin),
  and swaps the words 'left' and 'right' in captions so they still describe the image."""
  out = dict(example)
  out["image"] = example["image"][:, ::-1]
  if "segmentation_mask" in example:
    out["segmentation_mask"] = example["segmentation_mask"][:, ::-1]
  if "objects" in example:
    b = example["objects"]["bbox"]
    out["objects"] = dict(example["objects"], bbox=np.stack([b[:, 0], 1 - b[:, 3], b[:, 2], 1 - b[:, 1]], -1))
  if "captions" in example:
    out["captions"] = dict(example["captions"], text=[_swap_left_right(t) for t in example["captions"]["text"]])
  return out


def random_hflip(example: Example, rng: np.random.Generator, prob: float = 0.5) -> Example:
  """`hflip` with probability `prob` (one draw from rng either way)."""
  return hflip(example) if rng.random() < prob else example


def normalize(example: Example, mean: Sequence[float], std: Sequence[float]) -> Example:
  """image uint8 [H, W, C] -> float32 (image / 255 - mean) / std, mean and std per channel."""
  std = np.asarray(std, np.float32)
  image = example["image"].astype(np.float32)
  image *= 1.0 / (255.0 * std)
  image -= np.asarray(mean, np.float32) / std
  return dict(example, image=image)


# --- static shapes -------------------------------------------------------------------------------
def pad_objects(example: Example, max_objects: int) -> Example:
  """Pads every per-object field to [max_objects, ...] with zeros and adds objects/valid, bool
  [max_objects], True for real objects. Objects beyond max_objects are dropped (the first
  max_objects are kept: drawing order for shapes, annotation order for coco / voc)."""
  objects = example["objects"]
  n = min(len(objects["bbox"]), max_objects)
  padded = {}
  for key, value in objects.items():
    value = np.asarray(value)
    padded[key] = np.zeros((max_objects,) + value.shape[1:], value.dtype)
    padded[key][:n] = value[:n]
  padded["valid"] = np.arange(max_objects) < n
  return dict(example, objects=padded)


def select_caption(example: Example, rng: np.random.Generator) -> Example:
  """Keeps one caption, drawn uniformly (training on one caption per image per step)."""
  captions = example["captions"]
  k = int(rng.integers(len(captions["text"])))
  return dict(example, captions={key: value[k:k + 1] for key, value in captions.items()})


class Vocabulary:
  """Word-level caption vocabulary: lowercase words ([a-z0-9'] runs; punctuation dropped).

  Ids: <pad> = 0, <bos> = 1, <eos> = 2, <unk> = 3, then words by descending count (ties in
  alphabetical order), so a vocabulary is a pure function of its training captions.
  """
  PAD, BOS, EOS, UNK = 0, 1, 2, 3
  SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
  _WORD = re.compile(r"[a-z0-9']+")

  def __init__(self, words: Sequence[str]):
    """words: the non-special words, in id order (ids 4, 5, ...)."""
    self.tokens = list(self.SPECIALS) + list(words)
    self._ids = {t: i for i, t in enumerate(self.tokens)}

  @classmethod
  def tokenize(cls, text: str) -> list[str]:
    return cls._WORD.findall(text.lower())

  @classmethod
  def build(cls, texts: Iterable[str], min_count: int = 1, max_size: Optional[int] = None) -> "Vocabulary":
    """From training captions: words seen at least min_count times, at most max_size in all."""
    counts = collections.Counter(w for t in texts for w in cls.tokenize(t))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_size is not None:
      words = words[:max(0, max_size - len(cls.SPECIALS))]
    return cls(words)

  def __len__(self) -> int:
    return len(self.tokens)

  def encode(self, text: str, length: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (ids int32 [length]: <bos> words <eos> <pad>..., mask bool [length], True up to <eos>).

    Captions longer than length - 2 words are cut, and still end with <eos>."""
    if length < 2:
      raise ValueError(f"length must leave room for <bos> and <eos>, got {length}")
    words = [self._ids.get(w, self.UNK) for w in self.tokenize(text)][:length - 2]
    ids = np.full(length, self.PAD, np.int32)
    ids[:len(words) + 2] = [self.BOS] + words + [self.EOS]
    return ids, ids != self.PAD

  def decode(self, ids: Iterable[int]) -> str:
    """Words up to the first <eos>, specials other than <unk> left out."""
    words = []
    for i in ids:
      if int(i) == self.EOS:
        break
      if int(i) not in (self.PAD, self.BOS):
        words.append(self.tokens[int(i)])
    return " ".join(words)

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump({"tokens": self.tokens}, f)

  @classmethod
  def load(cls, path: str) -> "Vocabulary":
    with open(path) as f:
      tokens = json.load(f)["tokens"]
    if tuple(tokens[:len(cls.SPECIALS)]) != cls.SPECIALS:
      raise ValueError(f"{path} is not a vocabulary: it starts with {tokens[:4]}")
    return cls(tokens[len(cls.SPECIALS):])


def caption_texts(source: Any) -> Iterable[str]:
  """Every caption of a data source (e.g. the training split), as str, for `Vocabulary.build`."""
  for i in range(len(source)):
    for text in source[i]["captions"]["text"]:
      yield _text(text)


def encode_captions(example: Example, vocab: Vocabulary, length: int, max_captions: int) -> Example:
  """Replaces captions with static arrays: tokens int32 [max_captions, length], token_mask bool
  [max_captions, length] and valid bool [max_captions] (captions beyond max_captions dropped)."""
  texts = example["captions"]["text"][:max_captions]
  tokens = np.zeros((max_captions, length), np.int32)
  for k, text in enumerate(texts):
    tokens[k] = vocab.encode(text, length)[0]
  captions = {"tokens": tokens, "token_mask": tokens != Vocabulary.PAD,
              "valid": np.arange(max_captions) < len(texts)}
  return dict(example, captions=captions)


# --- real datasets -> canonical layout -------------------------------------------------------------
def _voc_image_id(filename: Union[str, bytes]) -> int:
  """'000005.jpg' -> 5 (VOC2007); '2008_000002.jpg' -> 2008000002 (VOC2012)."""
  return int(re.sub(r"\D", "", _text(filename).rsplit(".", 1)[0]))


def from_coco(example: Example) -> Example:
  """TFDS coco/2014, coco/2017: same names and box convention as shapes; no whole-image label,
  no segmentation_mask (TFDS coco has no instance masks), no captions; objects/label indexes the
  80 used categories (not COCO's 1..90 category ids); objects/id is dropped; is_crowd is kept for
  the task to ignore crowd boxes."""
  objects = example["objects"]
  return {"image": example["image"], "image/id": example["image/id"],
          "objects": {k: objects[k] for k in ("bbox", "label", "area", "is_crowd")}}


def from_coco_captions(example: Example) -> Example:
  """TFDS coco_captions (coco/2014 + Karpathy splits): coco's features plus captions{text, id},
  which keep their names."""
  return dict(from_coco(example), captions=example["captions"])


def from_voc(example: Example) -> Example:
  """TFDS voc/2007, voc/2012: objects/bbox has the same convention (VOC's 1-based pixel corners
  divided by the image size, not shifted); no image/id, so it is parsed from image/filename; no
  area, so it is the box area in pixels; is_difficult becomes is_crowd (both are ignored by the
  usual evaluation); pose, is_truncated and the image-level labels lists are dropped."""
  objects = example["objects"]
  bbox = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
  h, w = np.asarray(example["image"]).shape[:2]
  area = np.round((bbox[:, 2] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 1]) * h * w).astype(np.int64)
  return {"image": example["image"], "image/id": _voc_image_id(example["image/filename"]),
          "objects": {"bbox": bbox, "label": objects["label"], "area": area,
                      "is_crowd": np.asarray(objects["is_difficult"], np.bool_)}}


def from_shapes(example: Example) -> Example:
  """TFDS shapes: already canonical."""
  return example


def from_voc2012_segmentation(example: Example) -> Example:
  """voc2012_segmentation (this repository's builder): already canonical (image, image/id,
  segmentation_mask with 0 background, class + 1 on objects, 255 boundary); image/filename kept."""
  return example


ADAPTERS: Dict[str, Callable[[Example], Example]] = {
    "shapes": from_shapes,
    "voc2012_segmentation": from_voc2012_segmentation,
    "coco": from_coco,
    "coco_captions": from_coco_captions,
    "voc": from_voc,
}


def adapt(dataset: str, example: Example) -> Example:
  """Maps an example of `dataset` (a TFDS name such as 'voc/2007' or 'shapes/128') onto the
  canonical layout."""
  base = dataset.split(":")[0].split("/")[0]
  if base not in ADAPTERS:
    raise ValueError(f"no adapter for dataset {dataset!r}; known: {', '.join(sorted(ADAPTERS))}")
  return ADAPTERS[base](example)


# --- encoded images (a training source read with TFDS's SkipDecoding) -----------------------------
def decode_image(data: bytes) -> np.ndarray:
  """Encoded image bytes -> uint8 [H, W, C] ([H, W, 1] for grey), the array TFDS's Image feature
  gives when it decodes with PIL."""
  with open_encoded(data) as image:
    return _pixels(image)


def open_encoded(data: bytes) -> Image.Image:
  """Encoded image bytes, opened: the header is read (size, format, mode), the pixels are decoded
  when first used. Pass it to `image_hw` and `crop_and_resize` to parse the header once."""
  return Image.open(io.BytesIO(data))


def _pixels(image: Image.Image) -> np.ndarray:
  """A PIL image -> uint8 [H, W, C] ([H, W, 1] for grey)."""
  array = np.asarray(image)
  return array[..., None] if array.ndim == 2 else array


def image_hw(image: Union[bytes, Image.Image, np.ndarray]) -> tuple[int, int]:
  """(height, width) of encoded bytes or an opened image (read from the header alone) or of an
  array [H, W, ...]."""
  if isinstance(image, bytes):
    image = open_encoded(image)
  if isinstance(image, Image.Image):
    return image.height, image.width
  return tuple(np.asarray(image).shape[:2])


def _resize_array(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [h, w, C] -> [height, width, C], PIL bilinear: one call for C in (1, 3), which gives
  the same numbers as resizing each channel alone; per channel otherwise."""
  if image.shape[:2] == (height, width):
    return image
  channels = image.shape[-1]
  if channels in (1, 3):
    resized = np.asarray(Image.fromarray(image[..., 0] if channels == 1 else image).resize(
        (width, height), Image.BILINEAR))
    return resized.reshape(height, width, channels)
  return np.stack([np.asarray(Image.fromarray(image[..., c]).resize((width, height), Image.BILINEAR))
                   for c in range(channels)], axis=-1)


def crop_and_resize(image: Union[bytes, Image.Image, np.ndarray], box: tuple[int, int, int, int],
                    size: tuple[int, int], channels: int = 0) -> np.ndarray:
  """The crop box = (top, left, h, w) of an image, resized (bilinear) to size = (height, width).

  image: uint8 [H, W, C], or its encoded bytes (decoded as `decode_image` does), or those bytes
  opened by `open_encoded` (not yet decoded). Equals `native_resize.resize` (PIL's bilinear
  resize of the width, then of the height) of `decode_image(image)[top:top + h, left:left + w]`,
  except that a JPEG whose crop is at least twice the output on both sides is decoded at 1/2, 1/4
  or 1/8 scale (libjpeg's DCT scaling, PIL's `draft`: several times cheaper) and the crop resized
  from that reduced image by PIL.
  channels: 0 keeps the image's; otherwise a grey image is repeated to `channels`, as TFDS's
  decoder does for an image feature of that many channels (a grey JPEG among ImageNet's RGB ones).
  Returns uint8 [height, width, C].
  """
  top, left, h, w = box
  if isinstance(image, bytes):
    image = open_encoded(image)
  out = _reduced_jpeg_crop(image, box, size) if isinstance(image, Image.Image) else None
  if out is None:
    pixels = _pixels(image) if isinstance(image, Image.Image) else np.asarray(image)
    out = native_resize.resize(pixels[top:top + h, left:left + w], *size)
  return np.repeat(out, channels, -1) if channels > 1 and out.shape[-1] == 1 else out


def _reduced_jpeg_crop(opened: Image.Image, box: tuple[int, int, int, int],
                       size: tuple[int, int]) -> Optional[np.ndarray]:
  """`crop_and_resize` of an opened RGB or grey JPEG decoded at 1/2, 1/4 or 1/8 scale, where the
  crop is at least that many times the output on both sides; None where it is not (or the image
  is not such a JPEG)."""
  top, left, h, w = box
  out_h, out_w = size
  scale = next((s for s in (8, 4, 2) if h >= s * out_h and w >= s * out_w), 1)
  if scale == 1 or opened.format != "JPEG" or opened.mode not in ("RGB", "L"):
    return None
  full_h, full_w = opened.height, opened.width
  opened.draft(opened.mode, (-(-full_w // scale), -(-full_h // scale)))
  fy, fx = opened.height / full_h, opened.width / full_w
  resized = opened.resize((out_w, out_h), Image.BILINEAR, box=(left * fx, top * fy, (left + w) * fx, (top + h) * fy))
  return np.asarray(resized).reshape(out_h, out_w, 3 if opened.mode == "RGB" else 1)


class NormalizeTable:
  """uint8 [..., C] -> float32 (x / 255 - mean) / std per channel, computed as x * scale + shift
  in float32 (the numbers of `image * scale + shift` with scale = 1 / (255 std) and shift =
  -mean / std), by a look-up in a [C x 256] table: about 1.5x faster than the arithmetic."""

  def __init__(self, mean: Sequence[float], std: Sequence[float]):
    std = np.asarray(std, np.float32)
    self.scale = (1.0 / (255.0 * std)).astype(np.float32)
    self.shift = (-np.asarray(mean, np.float32) / std).astype(np.float32)
    self._tables: Dict[int, tuple[np.ndarray, np.ndarray]] = {}

  def table(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(table float32 [channels * 256], offsets uint16 [channels]): channel c's value of pixel x
    is table[x + offsets[c]] (the look-up `__call__` does; the same on the device)."""
    if channels not in self._tables:
      values = np.arange(256, dtype=np.float32)[:, None] * self.scale + self.shift  # [256, C or 1]
      table = np.ascontiguousarray(np.broadcast_to(values, (256, channels)).T).reshape(-1)
      self._tables[channels] = table, np.arange(channels, dtype=np.uint16) * 256
    return self._tables[channels]

  def __call__(self, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    table, offsets = self.table(image.shape[-1])
    return np.take(table, image + offsets)


def prepare_image(image: np.ndarray, channels: int = 0, size: int = 0) -> np.ndarray:
  """uint8 image [H, W] or [H, W, C] -> uint8 [size, size, channels] for whole-image tasks.

  channels: 0 keeps C; 1 averages RGB to grey; 3 repeats grey to RGB. size: 0 keeps H x W, else
  a bilinear resize to size x size. Encoded bytes are decoded first (`decode_image`).
  """
  image = decode_image(image) if isinstance(image, bytes) else np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if channels == 3 and image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  elif channels == 1 and image.shape[-1] == 3:
    image = image.mean(axis=-1, keepdims=True).astype(np.uint8)
  if size:
    image = _resize_array(image, size, size)
  return image
