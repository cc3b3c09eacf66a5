"""PIL's bilinear resize of uint8 images, the width then the height, natively: the training crops'
resize (`preprocess.crop_and_resize`), about 3x faster than PIL's (0.23 against 0.71 ms for a
120-420 pixel crop to 224x224 RGB, 2-core Zen 4).

research/data/native/resize.cc computes PIL's numbers for 8-bit images (its 22-bit fixed-point
coefficients, each pass rounded back to uint8) with the horizontal pass first, so `resize` equals
`Image.resize((width, h))` followed by `Image.resize((width, height))` to the bit; that pair of
calls is the fallback where the library cannot be built (research.models.native_cpu builds and
caches it, as it does the convolution kernels; a few seconds). One call of `Image.resize` differs
from it by at most 1 on some shapes: Pillow 13 runs its two passes in either order.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import subprocess
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

SOURCE = Path(__file__).parent / "native" / "resize.cc"


@functools.lru_cache(maxsize=None)
def _native() -> Optional[Callable[..., int]]:
  """The library's resize function, or None (after one warning) when it cannot be built."""
  from research.models import native_cpu  # pylint: disable=g-import-not-at-top  (imports JAX)
  try:
    function = native_cpu.load_library(SOURCE).ResearchResizeBilinearU8
  except (OSError, RuntimeError, ValueError, subprocess.SubprocessError, AttributeError) as error:
    logging.warning("native resize unavailable (%s: %s); PIL resizes the training crops (same pixels, slower)",
                    type(error).__name__, error)
    return None
  function.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                       ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
  function.restype = ctypes.c_int
  return function


def _pil_two_passes(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """The same numbers through PIL: the width, then the height, each channel alone (one call for
  1 or 3 channels, which gives the same numbers)."""
  channels = image.shape[-1]
  planes = [image[..., 0]] if channels == 1 else [image] if channels == 3 else [image[..., c] for c in range(channels)]
  out = []
  for plane in planes:
    pil = Image.fromarray(np.ascontiguousarray(plane))
    out.append(np.asarray(pil.resize((width, plane.shape[0]), Image.BILINEAR).resize((width, height), Image.BILINEAR)))
  return out[0].reshape(height, width, channels) if len(out) == 1 else np.stack(out, -1)


def resize(image: np.ndarray, height: int, width: int, native: bool = True) -> np.ndarray:
  """uint8 [h, w, C] -> uint8 [height, width, C]: PIL's BILINEAR resize of the width, then of
  the height. `image` may be a view with strided rows (a crop of a larger array): its pixels
  are read in place. native=False: through PIL (the fallback; tests compare the two)."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(f"resize takes uint8 [h, w, C] images, got {image.dtype} {image.shape}")
  if image.shape[:2] == (height, width):
    return image
  function = _native() if native else None
  if function is None:
    return _pil_two_passes(image, height, width)
  if image.strides[1:] != (image.shape[2], 1):
    image = np.ascontiguousarray(image)
  out = np.empty((height, width, image.shape[2]), np.uint8)
  if function(image.ctypes.data, image.shape[0], image.shape[1], image.strides[0], image.shape[2],
              out.ctypes.data, height, width) != 0:
    raise ValueError(f"cannot resize {image.shape} to {height}x{width}")
  return out
