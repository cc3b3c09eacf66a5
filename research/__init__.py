"""research: a JAX research framework for multi-task deep-learning models."""

__version__ = "0.1.0"
