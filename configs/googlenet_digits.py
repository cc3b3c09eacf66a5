"""GoogLeNet with its two auxiliary classifiers (losses weighted 0.3) on the built-in `digits`
(28x28 greyscale, resized to 32x32; ceil-mode pools give stages 16, 8, 4, 2, 1): an offline
exercise of the Inception family and of the classification task's auxiliary-loss path."""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("googlenet", aux_logits=True)
  config.dataset.name = "digits"
  config.task = task_config("classification", image_size=32, augment=("crop",), crop_padding=2, aux_loss_weight=0.3)
  config.batch_size = 32
  config.num_train_steps = 300
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.02
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 20
  config.log_every_steps = 50
  config.eval_every_steps = 150
  config.checkpoint_every_steps = 150
  return config
