"""Classifier zoo (registered in MODELS; ResNets, VGG-16 and GoogLeNet also in BACKBONES)."""
from research.models.classifiers import googlenet, lenet, resnet, vgg  # noqa: F401
