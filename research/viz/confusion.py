"""Confusion-matrix pictures: the whole matrix with class names, or for many classes the most
confused pairs as a table."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MAX_MATRIX_CLASSES = 30


def most_confused(confusion: np.ndarray, names: Sequence[str], k: int = 20) -> List[Dict[str, object]]:
  """The k largest off-diagonal cells of `confusion` [C, C] (rows true, columns predicted), largest
  first (ties: lower true class, then lower predicted class), as {'true', 'predicted', 'count',
  'fraction_of_true'} with class names."""
  confusion = np.asarray(confusion)
  off = confusion.astype(np.float64).copy()
  np.fill_diagonal(off, 0)
  flat = np.argsort(-off.ravel(), kind="stable")[:k]
  support = confusion.sum(axis=1)
  pairs = []
  for index in flat:
    t, p = divmod(int(index), confusion.shape[1])
    if off[t, p] <= 0:
      break
    pairs.append({"true": names[t], "predicted": names[p], "count": int(confusion[t, p]),
                  "fraction_of_true": float(confusion[t, p] / max(support[t], 1))})
  return pairs


def _blues(rate: np.ndarray) -> np.ndarray:
  """uint8 [..., 3]: rate in [0, 1] from near-white to dark blue (matplotlib's 'Blues' end points)."""
  light, dark = np.array([247, 251, 255], np.float64), np.array([8, 48, 107], np.float64)
  return (light + np.clip(rate, 0, 1)[..., None] * (dark - light)).round().astype(np.uint8)


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> Tuple[int, int]:
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  return right - left, bottom - top


def _matrix_picture(confusion: np.ndarray, names: Sequence[str]) -> np.ndarray:
  n = confusion.shape[0]
  cell = max(16, min(44, 640 // max(n, 1)))
  font, small = ImageFont.load_default(size=13), ImageFont.load_default(size=max(8, min(13, cell // 3)))
  scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  label_w = max(_text_size(scratch, str(name), font)[0] for name in names) + 8
  line = _text_size(scratch, "Ag", font)[1] + 6
  rotate = n > 8  # column labels upright under narrow cells would overlap
  left, top = line + label_w, 8
  bottom = (label_w if rotate else line) + line + 4
  width, height = left + n * cell + 8, top + n * cell + bottom
  picture = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(picture)
  rate = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  cells = np.repeat(np.repeat(_blues(rate), cell, axis=0), cell, axis=1)
  picture.paste(Image.fromarray(cells), (left, top))
  for i, name in enumerate(names):
    name = str(name)
    w, h = _text_size(draw, name, font)
    draw.text((left - 6 - w, top + i * cell + (cell - h) // 2), name, fill="black", font=font, anchor="la")
    if rotate:
      label = Image.new("L", (w + 2, h + 4), 255)
      ImageDraw.Draw(label).text((0, 0), name, fill=0, font=font)
      label = label.rotate(90, expand=True)
      picture.paste(Image.new("RGB", label.size, "black"), (left + i * cell + (cell - label.size[0]) // 2,
                                                             top + n * cell + 4), Image.eval(label, lambda v: 255 - v))
    else:
      draw.text((left + i * cell + (cell - w) // 2, top + n * cell + 4), name, fill="black", font=font)
  if n <= 20:
    for t in range(n):
      for p in range(n):
        text = str(int(confusion[t, p]))
        w, h = _text_size(draw, text, small)
        draw.text((left + p * cell + (cell - w) // 2, top + t * cell + (cell - h) // 2), text,
                  fill="white" if rate[t, p] > 0.5 else "black", font=small)
  w, _ = _text_size(draw, "predicted", font)
  draw.text((left + (n * cell - w) // 2, height - line), "predicted", fill="black", font=font)
  title = Image.new("L", (_text_size(draw, "true", font)[0] + 2, line), 255)
  ImageDraw.Draw(title).text((0, 0), "true", fill=0, font=font)
  title = title.rotate(90, expand=True)
  picture.paste(Image.new("RGB", title.size, "black"), (2, top + (n * cell - title.size[1]) // 2),
                Image.eval(title, lambda v: 255 - v))
  return np.asarray(picture)


def _pairs_picture(confusion: np.ndarray, names: Sequence[str]) -> np.ndarray:
  pairs = most_confused(confusion, names, 20)
  font = ImageFont.load_default(size=13)
  rows = [["true", "predicted", "count", "of true class"]]
  rows += [[str(p["true"]), str(p["predicted"]), str(p["count"]), f"{p['fraction_of_true']:.1%}"] for p in pairs]
  scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  widths = [max(_text_size(scratch, row[c], font)[0] for row in rows) + 16 for c in range(4)]
  line = _text_size(scratch, "Ag", font)[1] + 8
  title = f"{confusion.shape[0]} classes: the {len(pairs)} most confused pairs"
  width = max(sum(widths), _text_size(scratch, title, font)[0]) + 16
  picture = Image.new("RGB", (width, (len(rows) + 1) * line + 16), "white")
  draw = ImageDraw.Draw(picture)
  draw.text((8, 8), title, fill="black", font=font)
  for r, row in enumerate(rows):
    x, y = 8, 8 + (r + 1) * line
    if r == 0:
      draw.rectangle((8, y - 2, 8 + sum(widths), y + line - 4), fill=(225, 232, 245))
    for c, text in enumerate(row):
      draw.text((x + 4, y), text, fill="black", font=font)
      x += widths[c]
  return np.asarray(picture)


def confusion_picture(confusion: np.ndarray, names: Sequence[str]) -> np.ndarray:
  """uint8 [H, W, 3]: for <= 30 classes the matrix (rows true, columns predicted; colour = fraction
  of the true class, counts written in the cells up to 20 classes), else the 20 most confused pairs
  as a table. Drawn with PIL (~10 ms; matplotlib took 0.1-0.5 s, plus ~1 s to import, at every
  evaluation of a classifier)."""
  confusion = np.asarray(confusion)
  if confusion.shape[0] > MAX_MATRIX_CLASSES:
    return _pairs_picture(confusion, names)
  return _matrix_picture(confusion, names)
