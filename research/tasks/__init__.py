"""Tasks register themselves in research.core.registry.TASKS on import."""
from research.tasks import classification, detection, gan, segmentation  # noqa: F401
