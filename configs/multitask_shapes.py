"""Joint classification + detection + segmentation + captioning on the built-in `shapes` dataset.

One small CNN backbone ('small_cnn', strides 2..32) shared by four heads, trained in one step:
  classification  global average pool of c5 + dense: the scene's dominant shape (3 classes),
  detection       Faster R-CNN head (64-channel FPN on c2..c4, anchors 12 / 24 / 48), sized as
                  configs/faster_rcnn_shapes.py,
  segmentation    FCN-8s decoder on c3..c5 (background + 3 classes), as configs/fcn8s_shapes.py,
  captioning      Show-and-Tell LSTM on the pooled c5 features, as configs/show_tell_shapes.py.
Losses summed with weight 1 each (--config.task.loss_weighting=uncertainty learns the weights).
Evaluated on the shapes test split by each head's own metrics: classification/accuracy,
detection/mAP (pycocotools), segmentation/miou, captioning/bleu_4 and /cider.
experiments/multitask_shapes.py compares it with the single-task models at equal budget.
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
SHAPES_MEAN, SHAPES_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def get_config():
  config = default_config()
  config.model = model_config(
      "multitask", backbone="small_cnn",
      classification=ConfigDict({"dropout": 0.0}),
      detection=ConfigDict(DETECTION),
      segmentation=ConfigDict({"decoder": "fcn8s"}),
      captioning=ConfigDict({"embed_dim": 128, "hidden_size": 256, "dropout": 0.3}))
  config.dataset.name = "shapes"
  config.dataset.eval_split = "test"
  config.task = task_config(
      "multitask", heads=("classification", "detection", "segmentation", "captioning"),
      mean=SHAPES_MEAN, std=SHAPES_STD, augment=("flip",))
  config.task.detection.max_objects = 4
  config.task.captioning.max_length = 20
  config.batch_size = 32
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
