"""GoogLeNet (Inception v1, torchvision's form with BatchNorm) on ImageNet (ILSVRC-2012).

Needs imagenet2012 prepared in data_dir (manual download; tfds build imagenet2012
--file_format=array_record). torchvision's GoogLeNet weights were ported from the original
release, not trained with a torchvision recipe, so this config combines: the paper (Szegedy et
al. 2015, section 6) for what it specifies -- SGD momentum 0.9, auxiliary classifiers after 4a
and 4d with their losses weighted by 0.3, crops of 8%-100% of the image area with aspect ratios
3/4-4/3 (RandomResizedCrop, which comes from this paper), horizontal flips -- and torchvision's
default classification recipe for what it leaves open or what the BatchNorm variant changes:
batch 256, learning rate 0.1 divided by 10 every 30 epochs for 90 epochs (the paper: -4% every
8 epochs, Polyak averaging, no batch size or length given), weight decay 1e-4, dropout 0.2
before the classifier, N(0, 0.01) kernels; resize 256 and centre crop 224 at evaluation.
Expected: 69.778% top-1 (torchvision's ported weights; experiments/googlenet_imagenet.py).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config():
  config = default_config()
  config.model = model_config("googlenet", aux_logits=True, kernel_init="normal:0.01")
  config.dataset.name = "imagenet2012"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "validation"
  config.dataset.num_workers = 16
  config.dataset.cache_mb = 0
  config.task = task_config("classification", image_size=224, eval_resize=256, augment=("random_resized_crop", "flip"),
                            mean=IMAGENET_MEAN, std=IMAGENET_STD, aux_loss_weight=0.3)
  config.batch_size = 256
  config.num_epochs = 90
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "step"
  config.optimizer.boundaries = (1 / 3, 2 / 3)
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  return config
