"""TFDS builder `shapes`: procedural scenes with labels, boxes, masks and captions."""
from research.data.builders.shapes.shapes_dataset_builder import Builder, ShapesConfig

__all__ = ["Builder", "ShapesConfig"]
