"""DCGAN on CelebA (TFDS celeb_a), 64x64 crops (64x64, 3 channel(s)). The paper's face setup; set task.classifier_workdir for sample metrics."""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model.name = "dcgan"
  config.model.generator = model_config("dcgan_generator", image_size=64, channels=3, base_features=64)
  config.model.discriminator = model_config("dcgan_discriminator", image_size=64, base_features=64)
  config.dataset.name = "celeb_a"
  config.dataset.eval_split = "test"
  config.task = task_config("gan", z_dim=100, image_size=64, channels=3, classifier_workdir="", feature_layer="")
  config.batch_size = 128
  config.num_train_steps = 50000
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  return config
