"""LeNet-5 on the built-in `digits` dataset (1,437 train / 360 test, 28x28): the default job.

Reaches about 99% test accuracy in 800 steps (random crops with padding 2) (well under a minute on 2 CPU cores).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("lenet5")
  config.dataset.name = "digits"
  config.task = task_config("classification", augment=("crop",), crop_padding=2)
  config.batch_size = 128
  config.num_train_steps = 800
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.schedule = "cosine"
  config.optimizer.weight_decay = 5e-4
  config.log_every_steps = 100
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 400
  return config
