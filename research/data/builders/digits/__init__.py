"""TFDS builder `digits`: scikit-learn's bundled handwritten digits, as an MNIST stand-in."""
from research.data.builders.digits.digits_dataset_builder import Builder

__all__ = ["Builder"]
