"""Matplotlib figures rendered off-screen (Agg) to uint8 arrays."""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np


def new_figure(size: Tuple[float, float]) -> Any:
  """A matplotlib Figure of `size` inches, not tied to any GUI backend."""
  from matplotlib.figure import Figure
  return Figure(figsize=size, dpi=100)


def to_array(fig: Any) -> np.ndarray:
  """The rendered figure as uint8 [H, W, 3]."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  canvas = FigureCanvasAgg(fig)
  fig.tight_layout()
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()
