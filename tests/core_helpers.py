"""Small configs for core tests: LeNet-5 on `digits`, a few steps, no compilation cache; the
project's config files by name."""
from __future__ import annotations

import os

import flax.linen as nn
import jax.numpy as jnp

import research.models  # noqa: F401
import research.tasks  # noqa: F401
from research.core.config import default_config, load_config_file
from research.core.registry import MODELS


@MODELS.register("test_bn_dropout_cnn")
class BNDropoutCNN(nn.Module):
  """A tiny CNN with BatchNorm and dropout, to test cross-replica statistics and RNG handling."""

  num_classes: int = 10
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    from research.models.conv import Conv
    x = Conv(8, (3, 3), strides=2)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    x = x.mean(axis=(1, 2))
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def small_config(data_dir: str, steps: int = 8, model: str = "lenet5"):
  config = default_config()
  config.model.name = model
  config.dataset.name = "digits"
  config.dataset.data_dir = data_dir
  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_train_steps = steps
  config.log_every_steps = 3
  config.eval_every_steps = 6
  config.checkpoint_every_steps = 4
  config.optimizer.learning_rate = 0.05
  config.compilation_cache_dir = ""
  config.dataset.num_workers = 0  # tests read in-process (the default, -1, may start workers)
  return config


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def project_config(name_or_path: str):
  """get_config() of configs/<name>.py (or of a path), reading data in-process as tests do."""
  path = name_or_path if os.path.sep in name_or_path else os.path.join(CONFIG_DIR, name_or_path + ".py")
  config = load_config_file(path)
  config.dataset.num_workers = 0
  return config


def predict_and_inspect(workdir: str, out_dir: str):
  """research-predict on a generated 50x40 RGB PNG and research-inspect on the same file, for a
  trained run in `workdir`: (the prediction record, inspect.json's record). Asserts that both wrote
  their pictures."""
  import json

  import numpy as np
  from PIL import Image

  from research.cli.inspect_run import inspect_run
  from research.inspection import predict
  photo = os.path.join(out_dir, "photo.png")
  os.makedirs(out_dir, exist_ok=True)
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40, 3), np.uint8)).save(photo)
  [record] = predict.predict_files(predict.Run.load(workdir), [photo], os.path.join(out_dir, "predict"))
  pictures = record["pictures"].values() if "pictures" in record else [record["picture"]]
  assert all(os.path.getsize(p) > 0 for p in pictures)
  inspect_run(workdir, image=photo, out=os.path.join(out_dir, "inspect"))
  with open(os.path.join(out_dir, "inspect", "inspect.json")) as f:
    inspected = json.load(f)
  for name in inspected["files"]:
    assert os.path.getsize(os.path.join(out_dir, "inspect", name)) > 0, name
  return record, inspected
