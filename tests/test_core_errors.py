"""Bad input gets a clear error naming the problem: config keys, missing datasets, NaN loss."""
import os
import subprocess
import sys

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


_APP = """
import atexit, sys
from research.cli.app import run_app
atexit.register(lambda: print("interpreter teardown ran", flush=True))
def main(argv):
  sys.stdout.write("result line, unflushed")
  return int(sys.argv[1])
run_app(main, skip_teardown=sys.argv[2] == "skip")
"""


@pytest.mark.parametrize("code", [0, 75])
def test_skip_teardown_keeps_output_and_exit_code(tmp_path, code):
  # research-train ends without the interpreter's teardown (~0.5 s of JAX's C++ destructors):
  # what main wrote still arrives, the exit code is main's, atexit handlers do not run.
  script = tmp_path / "app.py"
  script.write_text(_APP)
  fast = subprocess.run([sys.executable, str(script), str(code), "skip"], capture_output=True, text=True)
  normal = subprocess.run([sys.executable, str(script), str(code), "keep"], capture_output=True, text=True)
  assert (fast.returncode, normal.returncode) == (code, code)
  assert fast.stdout == "result line, unflushed", fast.stdout + fast.stderr
  assert normal.stdout == "result line, unflushedinterpreter teardown ran\n"


def test_compiler_options_overrides_may_add_keys():
  """`--config.compiler_options.KEY=V` adds XLA options the config file does not set (ml_collections
  alone rejects new keys); other overrides go to absl unchanged."""
  from research.cli.app import _take_free_section_overrides
  rest, taken = _take_free_section_overrides(
      ["prog", "--config=c.py", "--config.compiler_options.xla_a=false", "--config.batch_size=8",
       "--config.compiler_options.xla_b", "3", "--config.compiler_options.xla_c=fast",
       "--config.model.dropout_rate=0.1"])
  assert rest == ["prog", "--config=c.py", "--config.batch_size=8", "--config.model.dropout_rate=0.1"]
  assert taken == [("compiler_options", "xla_a", False), ("compiler_options", "xla_b", 3),
                   ("compiler_options", "xla_c", "fast")]
  with pytest.raises(ConfigError, match="needs a value"):
    _take_free_section_overrides(["prog", "--config.compiler_options.xla_a"])
