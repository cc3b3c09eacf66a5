"""Procedural scenes of coloured shapes: images, boxes, masks and captions, in pure numpy.

A scene is a square RGB image of `image_size` pixels on one of three backgrounds (a muted solid
colour, a linear gradient between two muted colours, or a solid colour with light Gaussian noise),
with 1 to `max_objects` objects. Each object has a class (`CLASS_NAMES`: square, circle,
triangle), a colour from the named `PALETTE` (bright and saturated, so it stands out from every
background and its colour word is unambiguous), a size ("small": half-extent 7-11% of the image
side; "large": 14-21%) and a centre that keeps the whole shape inside the image.

Occlusion: objects are drawn in order, later ones on top. A new object is placed only where every
object already drawn keeps at least `min_visible` (default 0.5) of its own pixels visible; after
`MAX_PLACEMENT_TRIES` rejected positions the new object is left out. So every object in a scene
is drawn, mostly visible, and has a box, a mask and a place in the captions: no box is ever
dropped after the fact.

Conventions (all per scene, N objects, S = image_size):
- image: uint8 [S, S, 3].
- class_mask: uint8 [S, S]; 0 for background, class index + 1 for the visible pixels of objects.
- instance_mask: uint8 [S, S]; 0 for background, k + 1 for the visible pixels of object k.
- boxes: float32 [N, 4], xyxy in pixel-edge coordinates: the box of an object whose visible pixels
  span columns c0..c1 and rows r0..r1 (inclusive) is [c0, r0, c1 + 1, r1 + 1]. Dividing by S gives
  the normalized coordinates of TFDS `BBoxFeature` (which orders them [ymin, xmin, ymax, xmax]).
- labels: int64 [N] class indices; areas: int64 [N] visible pixel counts.
- label: the class of the object with the largest visible area (ties: the one drawn first).
- captions: `NUM_CAPTIONS` English sentences generated from the scene; spatial relations
  ("to the left of", "to the right of", "above", "below") compare the centres of the visible
  boxes along the axis on which they are further apart.

A scene is a pure function of its seed: `generate_scene(seed)` with the same seed and arguments
returns the same bytes on every machine (numpy's PCG64 generator).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence, Union

import numpy as np

CLASS_NAMES = ("square", "circle", "triangle")
PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "orange": (245, 140, 30),
    "purple": (155, 60, 205),
    "cyan": (40, 205, 215),
    "white": (240, 240, 240),
}
COLOR_NAMES = tuple(PALETTE)
SIZE_RANGES = {"small": (0.07, 0.11), "large": (0.14, 0.21)}  # half-extent / image side
BACKGROUNDS = ("plain", "gradient", "noisy")
NUM_CAPTIONS = 5
MAX_PLACEMENT_TRIES = 20
COLOR_JITTER = 12  # +- per channel, object colours
NOISE_STD = 8.0  # noisy background, in uint8 units
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

Seed = Union[int, Sequence[int]]


@dataclasses.dataclass(frozen=True)
class Scene:
  """One generated scene; see the module docstring for shapes and conventions."""
  image: np.ndarray
  class_mask: np.ndarray
  instance_mask: np.ndarray
  boxes: np.ndarray
  labels: np.ndarray
  areas: np.ndarray
  colors: tuple[str, ...]
  sizes: tuple[str, ...]
  background: str
  label: int
  captions: tuple[str, ...]


def _shape_mask(cls: int, cx: float, cy: float, r: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
  """Boolean [S, S] coverage of a shape, tested at pixel centres (xs [1, S], ys [S, 1], in [0, 1])."""
  dx, dy = np.abs(xs - cx), ys - cy
  if CLASS_NAMES[cls] == "square":
    return (dx <= r) & (np.abs(dy) <= r)
  if CLASS_NAMES[cls] == "circle":
    return dx * dx + dy * dy <= r * r
  # Upright isosceles triangle: apex at (cx, cy - r), base from (cx - r, cy + r) to (cx + r, cy + r).
  return (dy >= -r) & (dy <= r) & (dx <= (dy + r) / 2)


def _muted_color(rng: np.random.Generator) -> np.ndarray:
  gray = rng.uniform(25, 115)
  return np.clip(gray + rng.uniform(-20, 20, size=3), 0, 255)


def _background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
  """float [S, S, 3] background of the given kind."""
  base = _muted_color(rng)
  if kind == "gradient":
    other = _muted_color(rng)
    angle = rng.uniform(0, 2 * np.pi)
    grid = (np.arange(size) + 0.5) / size - 0.5
    proj = np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None]
    t = (proj - proj.min()) / (proj.max() - proj.min())
    return base + t[..., None] * (other - base)
  image = np.broadcast_to(base, (size, size, 3)).astype(np.float64)
  if kind == "noisy":
    image = image + rng.normal(0, NOISE_STD, size=(size, size, 3))
  return image


def _phrase(color: str, shape: str, size: str | None = None) -> str:
  words = [w for w in (size, color, shape) if w]
  article = "an" if words[0][0] in "aeiou" else "a"
  return " ".join([article] + words)


def _join(items: Sequence[str]) -> str:
  return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _relation(a: np.ndarray, b: np.ndarray) -> str:
  """Where box a (xyxy) lies relative to box b: the axis on which their centres differ more."""
  dx = (a[0] + a[2] - b[0] - b[2]) / 2
  dy = (a[1] + a[3] - b[1] - b[3]) / 2
  if abs(dx) >= abs(dy):
    return "to the left of" if dx < 0 else "to the right of"
  return "above" if dy < 0 else "below"


def _position(box: np.ndarray, size: int) -> str:
  """Where a box's centre lies in a 3 x 3 grid over the image."""
  col = min(int(3 * (box[0] + box[2]) / 2 / size), 2)
  row = min(int(3 * (box[1] + box[3]) / 2 / size), 2)
  vertical, horizontal = ("top", "", "bottom")[row], ("left", "", "right")[col]
  if vertical and horizontal:
    return f"in the {vertical} {horizontal} corner"
  if vertical:
    return f"at the {vertical}"
  if horizontal:
    return f"on the {horizontal}"
  return "in the center"


def _counts(labels: Sequence[int], colors: Sequence[str], order: Sequence[int]) -> str:
  """'two squares and a red circle': classes in order of first appearance in `order`."""
  parts = []
  for cls in dict.fromkeys(labels[k] for k in order):
    members = [k for k in order if labels[k] == cls]
    shape = CLASS_NAMES[cls]
    if len(members) == 1:
      parts.append(_phrase(colors[members[0]], shape))
    elif len({colors[k] for k in members}) == 1:
      parts.append(f"{_NUMBERS[len(members)]} {colors[members[0]]} {shape}s")
    else:
      parts.append(f"{_NUMBERS[len(members)]} {shape}s")
  return _join(parts)


def _captions(rng: np.random.Generator, labels: Sequence[int], colors: Sequence[str],
              sizes: Sequence[str], boxes: np.ndarray, areas: np.ndarray, background: str,
              image_size: int) -> tuple[str, ...]:
  """NUM_CAPTIONS captions: a full listing, counts, two spatial relations and the background."""
  n = len(labels)
  left_to_right = sorted(range(n), key=lambda k: (boxes[k, 0] + boxes[k, 2], k))
  full = [_phrase(colors[k], CLASS_NAMES[labels[k]], sizes[k]) for k in range(n)]
  short = [_phrase(colors[k], CLASS_NAMES[labels[k]]) for k in range(n)]
  counts = _counts(labels, colors, left_to_right)
  by_area = sorted(range(n), key=lambda k: (-areas[k], k))
  if n == 1:
    where = _position(boxes[0], image_size)
    relation_1 = f"{full[0]} {where}"
    relation_2 = f"{short[0]} {where}"
  else:
    a, b = by_area[0], by_area[1]
    relation_1 = f"{full[a]} {_relation(boxes[a], boxes[b])} {short[b]}"
    c, d = rng.choice(n, size=2, replace=False)
    relation_2 = f"{short[c]} {_relation(boxes[c], boxes[d])} {full[d]}"
  return (
      _join([full[k] for k in left_to_right]),
      counts if len(set(labels)) == 1 else f"{_NUMBERS[n]} shapes: {counts}",
      relation_1,
      relation_2,
      f"{_join([short[k] for k in left_to_right])} on a {background} background",
  )


def generate_scene(seed: Seed, image_size: int = 64, max_objects: int = 4,
                   min_visible: float = 0.5) -> Scene:
  """Generates one scene, a pure function of (seed, image_size, max_objects, min_visible).

  Args:
    seed: an int or a sequence of ints (e.g. (split_seed, example_index)) for numpy's default_rng.
    image_size: S, the side of the square image in pixels (>= 16, so every shape covers a pixel;
      the first object always has a place, as nothing can hide it).
    max_objects: the number of objects attempted is uniform in 1..max_objects.
    min_visible: the fraction of its own pixels every object keeps visible (occlusion rule).
  Returns:
    a `Scene`; shapes and box convention as in the module docstring.
  """
  if max_objects < 1 or image_size < 16:
    raise ValueError(f"need max_objects >= 1 and image_size >= 16, got {max_objects}, {image_size}")
  rng = np.random.default_rng(seed)
  coords = (np.arange(image_size) + 0.5) / image_size
  xs, ys = coords[None, :], coords[:, None]
  background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
  image = _background(rng, background, image_size)
  instance = np.zeros((image_size, image_size), np.uint8)  # 0 background, k + 1 object k
  full_areas: list[int] = []
  labels: list[int] = []
  colors: list[str] = []
  sizes: list[str] = []
  for _ in range(int(rng.integers(1, max_objects + 1))):
    cls = int(rng.integers(len(CLASS_NAMES)))
    color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    size = ("small", "large")[rng.integers(2)]
    rgb = np.clip(np.asarray(PALETTE[color]) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255)
    for _ in range(MAX_PLACEMENT_TRIES):
      r = rng.uniform(*SIZE_RANGES[size])
      cx, cy = rng.uniform(r, 1 - r, size=2)
      shape = _shape_mask(cls, cx, cy, r, xs, ys)
      hidden = np.bincount(instance[shape], minlength=len(labels) + 1)[1:]
      visible = np.bincount(instance.ravel(), minlength=len(labels) + 1)[1:] - hidden
      if all(v >= min_visible * a for v, a in zip(visible, full_areas)):
        break
    else:
      continue
    instance[shape] = len(labels) + 1
    image[shape] = rgb
    full_areas.append(int(shape.sum()))
    labels.append(cls)
    colors.append(color)
    sizes.append(size)

  boxes = np.zeros((len(labels), 4), np.float32)
  for k in range(len(labels)):
    rows, cols = np.nonzero(instance == k + 1)
    boxes[k] = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
  areas = np.bincount(instance.ravel(), minlength=len(labels) + 1)[1:].astype(np.int64)
  class_lut = np.array([0] + [c + 1 for c in labels], np.uint8)
  label = labels[int(np.argmax(areas))]
  captions = _captions(rng, labels, colors, sizes, boxes, areas, background, image_size)
  return Scene(
      image=np.clip(np.round(image), 0, 255).astype(np.uint8),
      class_mask=class_lut[instance],
      instance_mask=instance,
      boxes=boxes,
      labels=np.asarray(labels, np.int64),
      areas=areas,
      colors=tuple(colors),
      sizes=tuple(sizes),
      background=background,
      label=label,
      captions=captions,
  )
