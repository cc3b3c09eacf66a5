"""LeNet-5 on MNIST (prepared in data_dir; see README "Datasets").

Target: 0.95% test error (LeCun et al. 1998 report 0.95% for LeNet-5 without distortions).
10 epochs of SGD with momentum at batch 128 (4,690 steps).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("lenet5")
  config.dataset.name = "mnist"
  config.task = task_config("classification", mean=(0.1307,), std=(0.3081,))
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
