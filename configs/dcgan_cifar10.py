"""DCGAN on CIFAR-10 (TFDS cifar10) (32x32, 3 channel(s)). Radford et al. 2016 setup (Adam 2e-4, beta1 0.5, batch 128). The paper's FID of about 29 (10k samples) uses Inception features, which cannot be downloaded here; ours uses a classifier the framework trains (task.classifier_workdir) and is not comparable."""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model.name = "dcgan"
  config.model.generator = model_config("dcgan_generator", image_size=32, channels=3, base_features=64)
  config.model.discriminator = model_config("dcgan_discriminator", image_size=32, base_features=64)
  config.dataset.name = "cifar10"
  config.dataset.eval_split = "test"
  config.task = task_config("gan", z_dim=100, image_size=32, channels=3, classifier_workdir="", feature_layer="")
  config.batch_size = 128
  config.num_train_steps = 50000
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  return config
