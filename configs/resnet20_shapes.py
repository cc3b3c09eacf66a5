"""ResNet-20 classifying the dominant shape of `shapes` images (resized to 32x32): an offline
exercise of the CIFAR ResNet recipe (crops, flips, SGD with momentum, step schedule)."""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("resnet20")
  config.dataset.name = "shapes"
  config.task = task_config("classification", image_size=32, augment=("crop", "flip"), crop_padding=4,
                            mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
  config.batch_size = 128
  config.num_train_steps = 600
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "step"
  config.log_every_steps = 50
  config.eval_every_steps = 300
  config.checkpoint_every_steps = 300
  return config
