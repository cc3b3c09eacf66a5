"""FCN-8s (Long, Shelhamer, Darrell, CVPR 2015) on PASCAL VOC 2012 segmentation, VGG-16 encoder.

Needs voc2012_segmentation with its train_aug split prepared in data_dir (README, Datasets):
    research-prepare-data voc2012_segmentation --voc_dir DIR --data_dir DATA_DIR
Start from ImageNet weights with --config.init_from.workdir=WORKDIR of a VGG-16 ImageNet run
(configs/vgg16_imagenet.py); init_from.rename maps its convolutions into the model's 'backbone'
and its classifier's fc1 / fc2 into fc6 / fc7 (reshaped to 7x7 and 1x1 convolutions: the paper's
convolutionalization); only the score layers and upsamplings start fresh.

The paper's recipe (section 4.3) where this framework has it:
  data      train_aug (10,582 images: VOC 2012 train and SBD, less VOC 2012 val; the paper used
            SBD's 8,498 training images); whole images, no augmentation (the paper saw no gain from
            mirroring or jittering), each padded to 512 x 512 with the ignore label (VOC images
            are at most 500 x 500), so padding counts in neither loss nor mIoU.
  optimizer SGD, momentum 0.9, minibatch 20 images, fixed learning rate 1e-4, weight decay 5e-4
            (the paper's doubled learning rate for biases has no equivalent here).
  model     FCN-8s: fc6 (7x7, 4096) and fc7 (1x1, 4096) with dropout 0.5 on pool5 (padding 3 where
            the paper pads the input by 100 pixels and crops the output; 134M parameters), skips
            from pool3 and pool4 ('c3', 'c4' of the vgg16 backbone), class scores
            zero-initialized, 2x upsamplings learned from a bilinear initialization, fixed bilinear
            upsampling to the input; trained at once (the paper trained 32s -> 16s -> 8s in stages).
  duration  the paper gives wall time only (FCN-32s three days, then one day each for 16s and 8s,
            on one K40); 100 epochs of train_aug (52,910 steps) is our estimate of the same budget.
  eval      VOC 2012 val (1,449 images), whole images (padded, padding ignored).
Expected: 62.2 mIoU on VOC 2012 test (experiments/fcn8s_voc2012.py says exactly what it is).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("fcn8s", backbone="vgg16", variant="8s", learned_upsampling=True, fc_channels=4096,
                              fc_dropout=0.5)
  config.dataset.name = "voc2012_segmentation"
  config.dataset.train_split = "train_aug"
  config.dataset.eval_split = "val"
  config.dataset.num_workers = 8
  config.task = task_config("segmentation", crop_size=512, augment=())
  config.batch_size = 20
  config.num_epochs = 100
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 1e-4
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "constant"
  config.init_from.rename = (("^params/classifier/fc1/", "params/fc6/"), ("^params/classifier/fc2/", "params/fc7/"),
                             ("^(params|batch_stats)/(?!fc6/|fc7/)", r"\1/backbone/"))
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  return config
