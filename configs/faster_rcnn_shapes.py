"""Faster R-CNN with a small FPN on the built-in `shapes` dataset (64x64, 3 classes), trained here.

Backbone: the small CNN encoder ('small_cnn'), levels c2..c4 (strides 4, 8, 16) into a 64-channel
FPN; one anchor size per level (12, 24, 48 pixels) at ratios 0.5, 1, 2; RoIs pooled from the level
floor(3 + log2(sqrt(area) / 16)). Proposal and RoI counts are scaled down from torchvision's for
scenes of at most four objects. Scored by pycocotools on the shapes test split (README figures).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config(
      "faster_rcnn", backbone="small_cnn", feature_levels=("c2", "c3", "c4"), fpn=True, fpn_channels=64,
      anchor_sizes=((12,), (24,), (48,)), aspect_ratios=(0.5, 1.0, 2.0),
      rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
      rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150,
      rpn_batch_size_per_image=128, box_batch_size_per_image=64,
      canonical_scale=16.0, canonical_level=3, box_head_hidden=256)
  config.dataset.name = "shapes"
  config.dataset.eval_split = "test"
  config.task = task_config("detection", max_objects=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
  config.batch_size = 16
  config.eval_batch_size = 64
  config.num_train_steps = 3000
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 100
  config.optimizer.grad_clip_norm = 10.0
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  return config
