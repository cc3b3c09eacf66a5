"""Bad input gets a clear error naming the problem: config keys, missing datasets, NaN loss."""
import os

import jax
import numpy as np
import pytest

from research.core.checkpoint import load_variables
from research.core.config import ConfigError
from research.core.train import train_and_evaluate
from research.data.datasets import DatasetNotPreparedError
from tests.core_helpers import small_config


def test_misspelled_top_level_key(data_dir, tmp_path):
  config = small_config(data_dir)
  config.num_train_step = 10
  with pytest.raises(ConfigError, match=r"unknown config key 'num_train_step'.*did you mean 'num_train_steps'"):
    train_and_evaluate(config, str(tmp_path))


def test_misspelled_nested_key(data_dir, tmp_path):
  config = small_config(data_dir)
  config.optimizer.learning_rat = 0.1
  with pytest.raises(ConfigError, match=r"'optimizer.learning_rat'.*did you mean 'learning_rate'"):
    train_and_evaluate(config, str(tmp_path))


def test_unknown_model_and_task_keys(data_dir, tmp_path):
  config = small_config(data_dir)
  config.model.dropout_rat = 0.5
  with pytest.raises(ConfigError, match=r"'model.dropout_rat'"):
    train_and_evaluate(config, str(tmp_path))
  config = small_config(data_dir)
  config.task.label_smoothin = 0.1
  with pytest.raises(ConfigError, match=r"'task.label_smoothin'.*did you mean 'label_smoothing'"):
    train_and_evaluate(config, str(tmp_path))
  config = small_config(data_dir)
  config.model.name = "lenet6"
  with pytest.raises(ConfigError, match=r"unknown model 'lenet6'; known: .*lenet5"):
    train_and_evaluate(config, str(tmp_path))


def test_missing_dataset_prints_prepare_command(tmp_path):
  config = small_config(str(tmp_path / "empty"))
  config.dataset.name = "mnist"
  with pytest.raises(DatasetNotPreparedError) as e:
    train_and_evaluate(config, str(tmp_path / "run"))
  message = str(e.value)
  assert "'mnist' is not prepared" in message
  assert "tfds build mnist" in message and "--file_format=array_record" in message
  assert "research-prepare-data mnist" in message


def test_unknown_dataset(tmp_path):
  config = small_config(str(tmp_path / "empty"))
  config.dataset.name = "no_such_dataset"
  with pytest.raises(DatasetNotPreparedError, match="neither built in"):
    train_and_evaluate(config, str(tmp_path / "run"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path):
  config = small_config(data_dir, steps=40)
  config.log_every_steps = 4
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 0
  config.optimizer.learning_rate = 1e6
  config.optimizer.schedule = "constant"
  workdir = str(tmp_path)
  with pytest.raises(FloatingPointError, match=r"NaN/Inf.*last good checkpoint \(step \d+\)"):
    train_and_evaluate(config, workdir)
  steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  assert steps, "a good checkpoint was written before the loss diverged"
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(load_variables(workdir)))
