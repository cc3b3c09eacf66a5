"""TFDS builder `voc2012_segmentation`: PASCAL VOC 2012 semantic segmentation from local files."""
from research.data.builders.voc_segmentation.voc_segmentation_dataset_builder import (
    CLASS_NAMES, IGNORE_LABEL, Builder, image_id, read_mask)

__all__ = ["CLASS_NAMES", "IGNORE_LABEL", "Builder", "image_id", "read_mask"]
