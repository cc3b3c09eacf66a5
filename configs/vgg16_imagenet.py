"""VGG-16 on ImageNet (ILSVRC-2012), torchvision's reference recipe for VGG without BatchNorm.

Needs imagenet2012 prepared in data_dir (manual download; tfds build imagenet2012
--file_format=array_record). Recipe (torchvision references/classification, "AlexNet and VGG":
the defaults with --lr 1e-2, since 0.1 is too high without BatchNorm): 90 epochs, batch 256
(8 GPUs x 32), SGD momentum 0.9, learning rate 0.01 divided by 10 every 30 epochs, weight decay
1e-4 (torchvision's default; Simonyan and Zisserman used 5e-4); RandomResizedCrop(224) +
horizontal flip; resize 256 and centre crop 224 at evaluation; ImageNet mean/std normalization.
Kernels as torchvision's VGG: He normal (fan_out) convolutions, N(0, 0.01) fc layers (biases 0).
Expected: 71.592% top-1 on the validation set (experiments/vgg16_imagenet.py).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config():
  config = default_config()
  config.model = model_config("vgg16", kernel_init="he_normal,normal:0.01")
  config.dataset.name = "imagenet2012"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "validation"
  config.dataset.num_workers = 16
  config.dataset.cache_mb = 0
  config.task = task_config("classification", image_size=224, eval_resize=256, augment=("random_resized_crop", "flip"),
                            mean=IMAGENET_MEAN, std=IMAGENET_STD)
  config.batch_size = 256
  config.num_epochs = 90
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "step"
  config.optimizer.boundaries = (1 / 3, 2 / 3)
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  return config
