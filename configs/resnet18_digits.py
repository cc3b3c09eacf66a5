"""ResNet-18 (ImageNet form: 7x7 stride-2 stem and max pool) on the built-in `digits`, with the
ImageNet recipe's input pipeline at small scale: RandomResizedCrop to 32x32 (area 60%-100% of the
28x28 image, so the digit stays mostly in view; no flips, which would change digits) in training,
resize 36 and centre crop 32 at evaluation; SGD with momentum and a step schedule."""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("resnet18")
  config.dataset.name = "digits"
  config.task = task_config("classification", image_size=32, eval_resize=36, augment=("random_resized_crop",),
                            crop_scale=(0.6, 1.0))
  config.batch_size = 32
  config.num_train_steps = 300
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.02
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "step"
  config.optimizer.boundaries = (0.5, 0.75)
  config.log_every_steps = 50
  config.eval_every_steps = 150
  config.checkpoint_every_steps = 150
  return config
