"""Faster R-CNN with VGG-16 on PASCAL VOC 2007 (Ren et al. 2015, the "07" row of Table 3).

Needs voc/2007 prepared in data_dir (tfds build voc/2007 --file_format=array_record) and an
ImageNet VGG-16 run to start from (configs/vgg16_imagenet.py):
  research-train --config=configs/faster_rcnn_vgg16_voc07.py --workdir=runs/frcnn_voc07 \\
      --config.init_from.workdir=runs/vgg16_imagenet
Recipe (the paper and py-faster-rcnn's end-to-end training): trained on VOC07 trainval (5,011
images), tested on VOC07 test (4,952); one image a step; SGD momentum 0.9, weight decay 5e-4,
learning rate 1e-3 for 60k steps then 1e-4 for 20k; horizontal flips; 'difficult' boxes neither
trained on nor counted (VOC07 11-point AP). RPN on conv5_3 (stride 16) with 9 anchors (128, 256,
512 at ratios 0.5, 1, 2), 2000 proposals in training and 300 at test; 128 RoIs an image at 25%
foreground; RoI features 7 x 7 into two 4096-wide FC layers; conv1-conv2 frozen.
Deviations: RoIAlign instead of RoI max pooling; the shorter side of 600 pixels becomes a longer
side of 800 (the same scale for VOC's typical 500 x 375 images), padded to 800 x 800; no dropout
in the two FC layers (torchvision's TwoMLPHead), which load VGG's fc6/fc7 (classifier fc1/fc2:
RoI features are flattened in VGG's 7 x 7 x 512 order) as in the paper.
Expected: 69.9 mAP on VOC07 test (experiments/faster_rcnn_vgg16_voc07.py).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config(
      "faster_rcnn", backbone="vgg16", feature_levels=("conv5",), fpn=False,
      anchor_sizes=((128, 256, 512),), aspect_ratios=(0.5, 1.0, 2.0),
      rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000,
      rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=300,
      box_batch_size_per_image=128, box_head_hidden=4096)
  config.dataset.name = "voc/2007"
  config.dataset.train_split = "train+validation"
  config.dataset.eval_split = "test"
  config.task = task_config("detection", image_size=800, max_objects=64, evaluation="voc07")
  config.batch_size = 1
  config.eval_batch_size = 8
  config.num_train_steps = 80000
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "step"
  config.optimizer.boundaries = (0.75,)
  config.optimizer.freeze = (r"backbone/conv[0-4]/",)  # conv1_x and conv2_x (conv2, conv5 are pools)
  config.init_from.rename = (("^params/classifier/fc1/", "params/head/box_head/fc6/"),
                             ("^params/classifier/fc2/", "params/head/box_head/fc7/"),
                             ("^(params|batch_stats)/(?!head/)", r"\1/backbone/"))
  config.log_every_steps = 100
  config.eval_every_steps = 20000
  config.checkpoint_every_steps = 5000
  return config
