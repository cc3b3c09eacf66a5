"""A dataset mixture: digit classification from `digits`, detection and segmentation from `shapes`.

Neither dataset has every label: each batch mixes `digits` images (28x28 grey, shown as 64x64
RGB; labels for the classification head only) and `shapes` scenes (boxes and masks, no digit
label) with probabilities 1/2 and 1/2 (task.mixture), and each head learns only from the examples
that carry its labels (research/tasks/multitask.py). Evaluation covers both test splits:
classification/accuracy on the 360 digits, detection/mAP and segmentation/miou on the 300 scenes.
No flips (digits are not mirror-symmetric). Heads and their sizes as configs/multitask_shapes.py.
"""
from ml_collections import ConfigDict

from research.config_sections import model_config, task_config
from research.core.config import default_config

DETECTION = dict(feature_levels=("c2", "c3", "c4"), fpn=True, fpn_channels=64,
                 anchor_sizes=((12,), (24,), (48,)), aspect_ratios=(0.5, 1.0, 2.0),
                 rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
                 rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150,
                 rpn_batch_size_per_image=128, box_batch_size_per_image=64,
                 canonical_scale=16.0, canonical_level=3, box_head_hidden=256)


def get_config():
  config = default_config()
  config.model = model_config("multitask", backbone="small_cnn", detection=ConfigDict(DETECTION),
                              segmentation=ConfigDict({"decoder": "fcn8s"}))
  config.dataset.name = "digits"  # the first member: the core opens it, the mixture replaces it
  config.dataset.train_split = "train"
  config.dataset.eval_split = "test"
  config.task = task_config(
      "multitask", heads=("classification", "detection", "segmentation"), image_size=64, augment=(),
      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
      mixture=(("digits", "train", "test", 1.0, ("classification",)),
               ("shapes", "train", "test", 1.0, ("detection", "segmentation"))))
  config.task.detection.max_objects = 4
  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_train_steps = 3000
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 50
  config.optimizer.grad_clip_norm = 10.0
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  return config
