"""DCGAN on the built-in `shapes` dataset (32x32, 3 channel(s)). Trains here (CPU) in minutes; sample metrics need a shapes classifier run (task.classifier_workdir)."""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model.name = "dcgan"
  config.model.generator = model_config("dcgan_generator", image_size=32, channels=3, base_features=32)
  config.model.discriminator = model_config("dcgan_discriminator", image_size=32, base_features=32)
  config.dataset.name = "shapes"
  config.dataset.eval_split = "test"
  config.task = task_config("gan", z_dim=100, image_size=32, channels=3, classifier_workdir="", feature_layer="")
  config.batch_size = 64
  config.num_train_steps = 3000
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  return config
