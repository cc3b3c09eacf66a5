"""A run folder for imported ImageNet weights: what `evaluate` and `config.init_from.workdir` read.

Layout, as a training run leaves it: DIR/config.json (an imagenet2012 classification config with
torchvision's evaluation preprocessing: shorter side resized to 256, centre crop 224, its mean and
std) and DIR/checkpoints/0/ (an orbax checkpoint of the trainer's state at step 0 holding the
weights, and zeroed metric accumulators). The config exists to evaluate the weights and to be
read by init_from; its optimizer is SGD without momentum so that the checkpoint holds no
optimizer state and is as large as the weights, and its 90 epochs only give the trainer a
duration. The folder is written under DIR.partial and renamed when complete, so an interrupted
import never leaves a folder that looks finished.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

import research.tasks  # noqa: F401  (registers the tasks)
from research.core.checkpoint import Checkpointer
from research.config_sections import model_config, task_config
from research.core import train_stats
from research.core.config import default_config
from research.core.optim import build_optimizer
from research.core.registry import TASKS
from research.weights.convert import WeightsError

PyTree = Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's GoogLeNet weights (transform_input=True) expect (x - 0.5) / 0.5 inputs: its
# transform_input turns ImageNet-normalized inputs into exactly that.
HALF = (0.5, 0.5, 0.5)


def imagenet_config(arch: str, kwargs: Dict[str, Any], transform_input: bool = False,
                    data_dir: str = "", eval_resize: int = 256) -> ConfigDict:
  """The evaluation config of MODELS `arch` built with `kwargs` (num_classes included) on imagenet2012.

  transform_input: normalize with mean = std = 0.5 (GoogLeNet's transform_input) instead of
  ImageNet's mean and std. eval_resize: the shorter side before the 224 x 224 centre crop.
  """
  config = default_config()
  config.model = model_config(arch, **{k: v for k, v in kwargs.items() if k != "num_classes"})
  config.dataset.name = "imagenet2012"
  config.dataset.data_dir = data_dir
  config.dataset.train_split = "train"
  config.dataset.eval_split = "validation"
  config.dataset.cache_mb = 0
  config.dataset.num_workers = 16
  config.task = task_config("classification", num_classes=int(kwargs["num_classes"]), image_size=224,
                            eval_resize=int(eval_resize), mean=HALF if transform_input else IMAGENET_MEAN,
                            std=HALF if transform_input else IMAGENET_STD)
  config.batch_size = 256
  config.num_epochs = 90
  config.optimizer.momentum = 0.0
  return config


def _checkpoint_tree(config: ConfigDict, variables: Dict[str, PyTree]) -> Dict[str, PyTree]:
  """{'state': TrainState, 'accum': {metric: (sum, count)}} as research.core.train.Trainer saves
  it, on one device (restoring reshards it onto any mesh)."""
  task = TASKS.get(config.task.name)(config)
  tx = build_optimizer(config.optimizer, 1)  # The optimizer state's structure does not depend on the duration.
  device = jax.local_devices()[0]
  state = task.create_state(jax.device_put(variables, device), tx)
  size = int(config.task.image_size)
  sample = {"image": jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
            "label": jax.ShapeDtypeStruct((1,), jnp.int32)}
  metrics = jax.eval_shape(  # the same metrics (config.monitor's included) as the Trainer accumulates
      lambda s, b: train_stats.train_step(task, config.monitor, s, b, jax.random.PRNGKey(0))[1], state, sample)
  zeros = lambda: jax.device_put(np.zeros((), np.float32), device)  # noqa: E731
  return {"state": state, "accum": {k: (zeros(), zeros()) for k in metrics}}


def check_new_folder(out: str) -> None:
  """Raises WeightsError unless `out` is a path that does not exist or an empty folder."""
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise WeightsError(f"{os.path.abspath(out)} already exists and is not an empty folder; pass a new --out")


def write_workdir(out: str, config: ConfigDict, variables: Dict[str, PyTree]) -> str:
  """Writes the run folder `out` (module docstring) for `config` holding `variables`; returns its
  absolute path. `out` must not exist or be empty."""
  out = os.path.abspath(out)
  check_new_folder(out)
  partial = out + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  checkpointer = Checkpointer(os.path.join(partial, "checkpoints"), max_to_keep=1, async_save=False)
  checkpointer.save(0, _checkpoint_tree(config, variables), {"step": 0, "next_batch_index": 0})
  checkpointer.close()
  with open(os.path.join(partial, "config.json"), "w") as f:
    json.dump(json.loads(config.to_json_best_effort()), f, indent=1)
  if os.path.isdir(out):
    os.rmdir(out)
  os.rename(partial, out)
  return out
