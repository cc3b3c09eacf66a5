"""DeepLabv3 (Chen, Papandreou, Schroff, Adam 2017) with a ResNet-50 encoder on PASCAL VOC 2012.

Needs voc2012_segmentation with its train_aug split prepared in data_dir (README, Datasets):
    research-prepare-data voc2012_segmentation --voc_dir DIR --data_dir DATA_DIR
Start from ImageNet weights with --config.init_from.workdir=WORKDIR of a ResNet-50 ImageNet run
(configs/resnet50_imagenet.py); init_from.rename maps its paths into the model's 'backbone'.

The paper's training recipe (section 4) where this framework has it:
  data      train_aug (10,582 images: VOC 2012 train and SBD, less VOC 2012 val); random rescale
            by 0.5..2.0, random 513 x 513 crops (padded with the mean colour and the ignore label
            where the image is smaller), horizontal flips.
  optimizer SGD, momentum 0.9, batch 16, learning rate 0.007 decayed to 0 over 30k steps, weight
            decay 1e-4 (not stated in the paper; DeepLab's code and the reference run use it). The
            paper's decay is 'poly' (power 0.9).
  model     output stride 16 (layer4 dilated by 2 instead of strided, as torchvision's
            replace_stride_with_dilation), ASPP with rates (6, 12, 18) and image pooling, 256 channels, BatchNorm
            trained (the paper's BatchNorm decay is 0.9997, ours 0.9; statistics are over the
            global batch of 16, whatever the number of devices, as the paper's single-GPU runs).
  eval      VOC 2012 val (1,449 images), single scale, whole images padded to 513 x 513.
Expected: 76.9 mIoU on VOC 2012 val (experiments/deeplabv3_r50_voc2012.py says exactly what it is).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("deeplabv3", backbone="resnet50", output_stride=16, aspp_features=256,
                              rates=(6, 12, 18), dilated_backbone=True)
  config.dataset.name = "voc2012_segmentation"
  config.dataset.train_split = "train_aug"
  config.dataset.eval_split = "val"
  config.dataset.num_workers = 8
  config.task = task_config("segmentation", crop_size=513, augment=("scale", "flip"), scale_range=(0.5, 2.0))
  config.batch_size = 16
  config.num_train_steps = 30000
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.007
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "poly"
  config.optimizer.power = 0.9
  config.init_from.rename = (("^(params|batch_stats)/", r"\1/backbone/"),)
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  return config
