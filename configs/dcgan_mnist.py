"""DCGAN on MNIST (prepared in data_dir) (28x28, 1 channel(s)). Feature extractor: a LeNet-5 run on MNIST (configs/lenet5_mnist.py)."""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model.name = "dcgan"
  config.model.generator = model_config("dcgan_generator", image_size=28, channels=1, base_features=64)
  config.model.discriminator = model_config("dcgan_discriminator", image_size=28, base_features=64)
  config.dataset.name = "mnist"
  config.dataset.eval_split = "test"
  config.task = task_config("gan", z_dim=100, image_size=28, channels=1, classifier_workdir="runs/lenet5_mnist", feature_layer="")
  config.batch_size = 128
  config.num_train_steps = 20000
  config.log_every_steps = 100
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  return config
