"""Tasks register themselves in research.core.registry.TASKS on import."""
from research.tasks import captioning, char_rnn, classification, detection, gan, segmentation  # noqa: F401
from research.tasks import multitask  # noqa: F401,E402
