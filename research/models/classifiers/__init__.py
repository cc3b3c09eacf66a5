"""Classifier zoo (registered in MODELS; ResNets also in BACKBONES)."""
from research.models.classifiers import lenet, resnet, vgg  # noqa: F401
