"""unet semantic segmentation on the built-in `shapes` dataset (64x64; background + 3 classes).

Scored on the shapes test split by confusion-matrix mIoU (see README for the figures measured here).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("unet", width=8)
  config.dataset.name = "shapes"
  config.dataset.eval_split = "test"
  config.task = task_config("segmentation", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
  config.batch_size = 32
  config.num_train_steps = 1500
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 3e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 50
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
