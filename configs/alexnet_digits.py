"""AlexNet on the built-in `digits` (28x28 greyscale, resized to 64x64: AlexNet's smallest input is
63x63): an offline exercise of the family, the classifier narrowed to 256 hidden units (4.9M
parameters for 10 classes instead of 57M). Adam rather than the ImageNet recipe's SGD: without
BatchNorm, SGD at lr 0.01 barely moved in 100-step trials here."""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("alexnet", hidden=256)
  config.dataset.name = "digits"
  config.task = task_config("classification", image_size=64, augment=("crop",), crop_padding=4)
  config.batch_size = 32
  config.num_train_steps = 300
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 5e-4
  config.optimizer.schedule = "cosine"
  config.log_every_steps = 50
  config.eval_every_steps = 150
  config.checkpoint_every_steps = 150
  return config
