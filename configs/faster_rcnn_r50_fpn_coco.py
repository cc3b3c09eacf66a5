"""Faster R-CNN, ResNet-50 + FPN, on COCO 2017 (torchvision's fasterrcnn_resnet50_fpn recipe).

Needs coco/2017 prepared in data_dir (tfds build coco/2017 --file_format=array_record) and an
ImageNet ResNet-50 run to start from (configs/resnet50_imagenet.py):
  research-train --config=configs/faster_rcnn_r50_fpn_coco.py --workdir=runs/frcnn_coco \\
      --config.init_from.workdir=runs/resnet50_imagenet
Recipe (torchvision references/detection, 'fasterrcnn_resnet50_fpn', 26 epochs): SGD momentum
0.9, learning rate 0.02 for 16 images a step, weight decay 1e-4, x0.1 at epochs 16 and 22, linear
warm-up over the first 1000 steps; horizontal flips; backbone BatchNorm frozen (statistics and
affine) with the stem and layer1 frozen (trainable_backbone_layers=3).
Deviation: torchvision resizes the shorter side to 800 (longer at most 1333) with batches padded
per step; static shapes here resize the longer side to 1088 and pad to 1088 x 1088, which gives
a typical 640 x 480 COCO image the same 800-pixel shorter side.
Expected: box AP 37.0 on val2017 (experiments/faster_rcnn_r50_fpn_coco.py).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("faster_rcnn", backbone="resnet50", frozen_backbone_bn=True)
  config.dataset.name = "coco/2017"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "validation"
  config.dataset.num_workers = 16
  config.dataset.cache_mb = 0
  config.task = task_config("detection", image_size=1088, max_objects=100)
  config.batch_size = 16
  config.num_epochs = 26
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.02
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "step"
  config.optimizer.boundaries = (16 / 26, 22 / 26)
  config.optimizer.warmup_steps = 1000
  config.optimizer.freeze = (r"backbone/(conv1|bn1|layer1_)", r"backbone/.*(bn\d|downsample_bn)/")
  config.init_from.rename = (("^(params|batch_stats)/", r"\1/backbone/"),)
  config.log_every_steps = 100
  config.eval_every_steps = 20000
  config.checkpoint_every_steps = 5000
  return config
