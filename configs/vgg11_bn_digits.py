"""VGG-11 with BatchNorm on the built-in `digits` (28x28 greyscale, resized to 32x32): an offline
exercise of the VGG family -- five max pools down to 1x1, adaptive pooling to 7x7, the classifier
narrowed to 256 hidden units (15.7M parameters for 10 classes instead of 129M). Learning rate
0.002: the first fc layer sees the 1x1 feature map 49 times over (25,088 inputs), and at 0.01 its
updates collapsed the run to chance in 100-step trials here."""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("vgg11_bn", hidden=256)
  config.dataset.name = "digits"
  config.task = task_config("classification", image_size=32, augment=("crop",), crop_padding=2)
  config.batch_size = 32
  config.num_train_steps = 300
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.002
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 20
  config.log_every_steps = 50
  config.eval_every_steps = 150
  config.checkpoint_every_steps = 150
  return config
