"""One shipped config per real dataset trains two steps (and evaluates) on the dataset prepared
from its tiny publisher-layout source, with overrides that make it small.

cifar100 and voc/2012, which no shipped config names, are not trained here (to keep these tests
within their time budget): their examples and feature specs are checked in
test_prepare_datasets.py, and they run the same task and model code as cifar10 and voc/2007."""
import json

import numpy as np
import pytest

from research.config_sections import model_config
from research.core.train import train_and_evaluate
from research.data.prepare import cli, sources
from tests import prepare_sources
from tests.core_helpers import project_config

TINY_DETECTOR = dict(backbone="small_cnn", backbone_args={"widths": (8, 8, 16, 16, 16)},
                     feature_levels=("c2", "c3", "c4"), fpn_channels=16, anchor_sizes=((12,), (24,), (48,)),
                     rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=100,
                     rpn_post_nms_top_n_test=30, rpn_batch_size_per_image=64, box_batch_size_per_image=32,
                     canonical_scale=16.0, canonical_level=3, box_head_hidden=32, detections_per_image=20)


def _classifier(config, image_size=None):
  if image_size:
    config.model = model_config("resnet20")
    config.task.image_size = image_size
    config.task.eval_resize = image_size
  return config


def _detector(config):
  config.model = model_config("faster_rcnn", **TINY_DETECTOR)
  config.task.image_size = 64
  config.task.max_objects = 8
  return config


def _captioner(config):
  config.model = model_config("show_tell", backbone="small_cnn", embed_dim=16, hidden_size=16)
  config.task.image_size = 32
  config.task.min_word_count = 1
  config.task.beam_size = 1
  config.dataset.train_split = "train+restval"
  return config


def _segmenter(config):
  config.model = model_config("fcn8s", backbone="small_cnn")
  config.task.crop_size = 32
  return config


def _gan(config):
  config.model.generator.base_features = 8
  config.model.discriminator.base_features = 8
  return config


# dataset -> (shipped config, overrides, eval split)
RUNS = {
    "mnist": ("lenet5_mnist", lambda c: c, "test"),
    "cifar10": ("resnet20_cifar10", lambda c: c, "test"),
    "imagenet2012": ("resnet50_imagenet", lambda c: _classifier(c, 32), "validation"),
    "coco/2017": ("faster_rcnn_r50_fpn_coco", _detector, "validation"),
    "coco_captions": ("show_tell_coco", _captioner, "test"),
    "voc/2007": ("faster_rcnn_vgg16_voc07", _detector, "test"),
    "voc2012_segmentation": ("fcn8s_voc2012", _segmenter, "val"),
    "celeb_a": ("dcgan_celeba64", _gan, "test"),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_shipped_config_trains_two_steps(name, tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "PUBLISHED", {})
  case = prepare_sources.case(name)
  source = prepare_sources.write(case, str(tmp_path / "source"), extracted=False)
  data_dir = str(tmp_path / "data")
  assert cli.run([name, "--source", source, "--data_dir", data_dir, "--num_workers", "1"]) == 0
  config_name, small, eval_split = RUNS[name]
  config = small(project_config(config_name))
  config.dataset.name = name
  config.dataset.data_dir = data_dir
  config.dataset.eval_split = eval_split
  config.dataset.num_workers = 0
  config.init_from.workdir = ""
  config.optimizer.freeze = ()
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 2
  config.log_every_steps = 1
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.compilation_cache_dir = ""
  result = train_and_evaluate(config, str(tmp_path / "run"))
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  train = [r for r in records if any(k.startswith("train/") for k in r)]
  assert [r["step"] for r in train] == [1, 2]
  assert all(np.isfinite(v) for r in train for k, v in r.items() if k.startswith("train/"))
  evaluated = {k: v for k, v in result.items() if k.startswith("eval/") and isinstance(v, float)}
  assert evaluated and all(np.isfinite(v) for v in evaluated.values()), result
