"""Two-stage detection: Faster R-CNN with an optional FPN (registers 'faster_rcnn')."""
from research.models.detection import faster_rcnn  # noqa: F401
