"""Semantic segmentation decoders (registered in MODELS) and the small encoder (in BACKBONES)."""
from research.models.segmentation import deeplab, encoder, fcn, unet  # noqa: F401
