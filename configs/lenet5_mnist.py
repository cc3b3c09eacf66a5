"""LeNet-5 on MNIST (prepared in data_dir; see README "Real datasets").

Target: 0.95% test error (LeCun et al. 1998 report 0.95% for LeNet-5 without distortions).
10 epochs of SGD with momentum at batch 128 (4,690 steps).
"""
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model.name = "lenet5"
  config.model.dropout_rate = 0.0
  config.dataset.name = "mnist"
  config.task.name = "classification"
  config.task.mean = (0.1307,)
  config.task.std = (0.3081,)
  config.batch_size = 128
  config.num_epochs = 10.0
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.schedule = "cosine"
  config.optimizer.weight_decay = 5e-4
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  return config
