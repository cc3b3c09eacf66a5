"""Joint COCO detection + captioning: ResNet-50 shared by a Faster R-CNN FPN head and a Show-and-Tell LSTM.

Data: TFDS coco_captions (COCO 2014 in Karpathy & Li's splits; every image has boxes and five
captions), so both heads train on the same images ('train+restval', 113,287) and are scored on
the same 5,000 Karpathy test images, which neither head has seen:
  tfds build coco_captions --data_dir DATA_DIR --file_format=array_record
and an ImageNet ResNet-50 run to start from (configs/resnet50_imagenet.py):
  research-train --config=configs/multitask_coco.py --workdir=runs/multitask_coco \\
      --config.dataset.data_dir=DATA_DIR --config.init_from.workdir=runs/resnet50_imagenet
Detection labels from coco/2017 with captions from coco_captions instead is a mixture:
  --config.task.mixture='(("coco/2017", "train", "validation", 1.0, ("detection",)),
                          ("coco_captions", "train+restval", "test", 1.0, ("captioning",)))'
(config.dataset.name / train_split / eval_split must then name the first member), but COCO 2017's
train split holds most Karpathy test images and Karpathy's train+restval most val2017 images, so
each head is then scored on images the other head trained on.

Model: backbone BatchNorm frozen and the stem and layer1 frozen, as configs/faster_rcnn_r50_fpn_coco.py;
the detection head is torchvision's fasterrcnn_resnet50_fpn; the caption LSTM is Show and Tell's
(512 units, embeddings 512, dropout 0.5; configs/show_tell_coco.py), on the average-pooled c5
features, beam search 3.
Images: longer side 800, padded to 800 x 800 (one size for both heads; the detection config
uses 1088). Loss weights learned (uncertainty weighting), so neither head's scale has to be tuned.
Recipe: SGD momentum 0.9, learning rate 0.02 for 16 images a step (the detection recipe; the LSTM
trains with it under gradient clipping), weight decay 1e-4, 1000 warm-up steps, step decay at
16/26 and 22/26 of 26 epochs.
Expected: not run here (no COCO, no GPU). For reference each head alone: box AP 37.0 on val2017
(torchvision, experiments/faster_rcnn_r50_fpn_coco.py) and BLEU-4 27.7 on Karpathy test (Vinyals
et al. 2015); box AP on Karpathy test is not directly comparable with val2017.
"""
from ml_collections import ConfigDict

from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config(
      "multitask", backbone="resnet50", frozen_backbone_bn=True,
      detection=ConfigDict({}),  # torchvision's defaults (DetectionHead's fields)
      captioning=ConfigDict({"embed_dim": 512, "hidden_size": 512, "dropout": 0.5}))
  config.dataset.name = "coco_captions"
  config.dataset.train_split = "train+restval"
  config.dataset.eval_split = "test"
  config.dataset.num_workers = 16
  config.dataset.cache_mb = 0
  config.task = task_config("multitask", heads=("detection", "captioning"), image_size=800,
                            loss_weighting="uncertainty")
  config.task.detection.max_objects = 100
  config.task.captioning.max_length = 18  # captions cut at 16 words, as configs/show_tell_coco.py
  config.task.captioning.min_word_count = 5
  config.task.captioning.beam_size = 3
  config.batch_size = 16
  config.num_epochs = 26
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.02
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "step"
  config.optimizer.boundaries = (16 / 26, 22 / 26)
  config.optimizer.warmup_steps = 1000
  config.optimizer.grad_clip_norm = 10.0
  config.optimizer.freeze = (r"backbone/(conv1|bn1|layer1_)", r"backbone/.*(bn\d|downsample_bn)/")
  config.init_from.rename = (("^(params|batch_stats)/", r"\1/backbone/"),)
  config.log_every_steps = 100
  config.eval_every_steps = 20000
  config.checkpoint_every_steps = 5000
  return config
