"""DCGAN on the built-in `digits` (28x28 greyscale), Adam 2e-4 / beta1 0.5 for G and D.

Sample metrics use the default job's LeNet-5 as feature extractor (its 84-d fc2 layer): train it
first with the README's first command (workdir runs/lenet5_digits).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model.name = "dcgan"
  config.model.generator = model_config("dcgan_generator", image_size=28, channels=1, base_features=32)
  config.model.discriminator = model_config("dcgan_discriminator", image_size=28, base_features=32)
  config.dataset.name = "digits"
  config.task = task_config("gan", z_dim=64, classifier_workdir="runs/lenet5_digits", feature_layer="fc2")
  config.batch_size = 64
  config.num_train_steps = 2000
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
