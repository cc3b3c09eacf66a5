"""TFDS builder `voc2012_segmentation`: PASCAL VOC 2012 semantic segmentation from a local VOCdevkit."""
from research.data.builders.voc_segmentation.voc_segmentation_dataset_builder import (
    CLASS_NAMES, Builder, prepare, read_mask)

__all__ = ["CLASS_NAMES", "Builder", "prepare", "read_mask"]
