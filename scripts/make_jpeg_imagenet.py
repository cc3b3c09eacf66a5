"""A generated ImageNet-layout JPEG dataset for timing the input pipeline (no real data needed).

  python scripts/make_jpeg_imagenet.py --data_dir /tmp/jpeg_data [--train 2000 --validation 200]

Writes `imagenet2012` (version and features of the TFDS catalog's builder: image as JPEG bytes,
label of 1,000 classes, file_name) in array_record format under data_dir, through TFDS's own
writer, so `--config resnet50_imagenet --config.dataset.data_dir=DATA_DIR` reads it exactly as it
reads a prepared ImageNet. Images are about 400 x 350 (each side drawn from +-15%), smooth colour
gradients with noise and a few shapes, JPEG quality 90: the size and entropy of typical
ImageNet photos (~50 kB), so decoding costs what it costs on the real data.
"""
from __future__ import annotations

import argparse
import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

_ImagenetBuilder = tfds.builder_cls("imagenet2012")


def jpeg_image(rng: np.random.Generator, height: int = 350, width: int = 400) -> bytes:
  """JPEG bytes of a random photo-like RGB image of about height x width (+-15% per side)."""
  h = int(height * rng.uniform(0.85, 1.15))
  w = int(width * rng.uniform(0.85, 1.15))
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  base = rng.uniform(0, 255, 3) + rng.uniform(-0.3, 0.3, 3) * y[..., None] + rng.uniform(-0.3, 0.3, 3) * x[..., None]
  pixels = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
  image = Image.fromarray(pixels)
  draw = ImageDraw.Draw(image)
  for _ in range(4):
    x0, y0 = rng.integers(0, w - 20), rng.integers(0, h - 20)
    box = [int(x0), int(y0), int(x0 + rng.integers(20, w // 2)), int(y0 + rng.integers(20, h // 2))]
    draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
  out = io.BytesIO()
  image.save(out, format="JPEG", quality=90)
  return out.getvalue()


class GeneratedImagenet(_ImagenetBuilder, skip_registration=True):
  """The catalog's imagenet2012 builder with generated examples instead of the ILSVRC tars."""

  name = "imagenet2012"

  def __init__(self, counts: dict, seed: int = 0, **kwargs):
    self._counts, self._seed = counts, seed
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generated(split, n) for split, n in self._counts.items()}

  def _generated(self, split: str, count: int):
    rng = np.random.default_rng((self._seed, len(split)))
    for i in range(count):
      name = f"{split}_{i:06d}.JPEG"
      yield name, {"image": io.BytesIO(jpeg_image(rng)), "label": int(rng.integers(1000)), "file_name": name}


def make(data_dir: str, train: int, validation: int, seed: int = 0) -> str:
  """Builds the dataset under data_dir; returns the builder's data directory."""
  builder = GeneratedImagenet({"train": train, "validation": validation}, seed, data_dir=data_dir,
                              file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=data_dir))
  return builder.data_dir


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--train", type=int, default=2000)
  parser.add_argument("--validation", type=int, default=200)
  args = parser.parse_args()
  print("written:", make(args.data_dir, args.train, args.validation))


if __name__ == "__main__":
  main()
