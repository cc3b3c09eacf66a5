"""Sample-quality metrics for generative models."""
from __future__ import annotations

import numpy as np
import scipy.linalg


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
  """||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)) between two Gaussians (as FID does,
  with the same regularization when the product is near-singular)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  covmean = scipy.linalg.sqrtm(cov1 @ cov2)
  if not np.isfinite(covmean).all():
    offset = np.eye(cov1.shape[0]) * 1e-6
    covmean = scipy.linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
  covmean = covmean.real
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))
