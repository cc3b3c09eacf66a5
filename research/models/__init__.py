"""Model families; importing this package registers every model in research.core.registry.MODELS."""
from research.models import classifiers  # noqa: F401
from research.models import segmentation  # noqa: F401,E402
from research.models import gan  # noqa: F401,E402
from research.models import detection  # noqa: F401,E402
from research.models import captioning  # noqa: F401,E402
from research.models import multitask  # noqa: F401,E402
