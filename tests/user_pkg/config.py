"""A user's config: imports the user's modules (registering their model, task and dataset), then
names them like the built-in ones.  research-train --config path/to/config.py --workdir DIR"""
import user_pkg.datasets  # noqa: F401  (registers the dataset 'user_bars')
import user_pkg.models  # noqa: F401  (registers the model 'user_mlp')
import user_pkg.tasks  # noqa: F401  (registers the task 'user_classification')
from research.config_sections import model_config, task_config
from research.core.config import default_config


def get_config():
  config = default_config()
  config.model = model_config("user_mlp", hidden=16)
  config.task = task_config("user_classification")
  config.dataset.name = "user_bars"
  config.batch_size = 16
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.optimizer.learning_rate = 0.05
  config.compilation_cache_dir = ""
  return config
