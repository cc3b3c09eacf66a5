"""LeNet-5 on the built-in `digits` dataset (1,437 train / 360 test, 28x28): the default job.

Reaches about 98% test accuracy in 500 steps (a few tens of seconds on 2 CPU cores).
"""
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model.name = "lenet5"
  config.model.dropout_rate = 0.0
  config.dataset.name = "digits"
  config.task.name = "classification"
  config.task.augment = ()
  config.batch_size = 128
  config.num_train_steps = 500
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.schedule = "cosine"
  config.optimizer.weight_decay = 5e-4
  config.log_every_steps = 100
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 250
  return config
