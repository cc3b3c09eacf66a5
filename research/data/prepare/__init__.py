"""Offline preparation of real datasets from their publishers' files, without TensorFlow.

`python -m research.data.prepare.cli NAME --source PATH` (research-prepare-data) writes the
TFDS array_record dataset NAME into a data_dir, with the catalog's name, version, splits and
features, from the files in PATH (downloaded archives or their extracted folders). One module per
dataset family; `sources` finds and reads the files, `writer` writes shards and metadata.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# Catalog name -> module with plan(name, source, data_dir, check) and HELP (the files it needs).
MODULES = {
    "mnist": "research.data.prepare.mnist",
    "cifar10": "research.data.prepare.cifar",
    "cifar100": "research.data.prepare.cifar",
    "imagenet2012": "research.data.prepare.imagenet2012",
    "coco/2017": "research.data.prepare.coco",
    "coco_captions": "research.data.prepare.coco",
    "voc/2007": "research.data.prepare.voc",
    "voc/2012": "research.data.prepare.voc",
    "voc2012_segmentation": "research.data.prepare.voc_segmentation",
    "celeb_a": "research.data.prepare.celeb_a",
}


def module(name: str) -> ModuleType:
  return importlib.import_module(MODULES[name])


def files_needed(name: str) -> str:
  """The publisher's files `name` is prepared from, in words."""
  help_ = module(name).HELP
  return help_[name] if isinstance(help_, dict) else help_
