"""Tasks register themselves in research.core.registry.TASKS on import."""
from research.tasks import classification, gan, segmentation  # noqa: F401
