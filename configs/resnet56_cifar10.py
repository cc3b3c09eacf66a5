"""ResNet-56 on CIFAR-10 (TFDS cifar10), He et al. 2016 section 4.2: the ResNet-20 recipe at depth 56
(option A shortcuts, 0.85M parameters): SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1
divided by 10 at 32k and 48k iterations, 64k iterations, random crops with 4-pixel padding and
horizontal flips. Expected test error 6.97% (He et al. 2016, table 6; experiments/resnet56_cifar10.py).
"""
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("resnet56")
  config.dataset.name = "cifar10"
  config.task = task_config("classification", augment=("crop", "flip"), crop_padding=4,
                            mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
  config.batch_size = 128
  config.num_train_steps = 64000
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.optimizer.schedule = "step"
  config.optimizer.boundaries = (0.5, 0.75)
  config.optimizer.decay_factor = 0.1
  config.log_every_steps = 200
  config.eval_every_steps = 4000
  config.checkpoint_every_steps = 4000
  return config
