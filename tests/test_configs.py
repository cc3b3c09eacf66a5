"""Every config file loads, and names only keys, models and tasks the framework knows."""
import glob
import importlib.util
import os

import pytest

import research.models  # noqa: F401
import research.tasks  # noqa: F401
from research.core.config import validate
from research.core.registry import BACKBONES, MODELS, TASKS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_is_valid(path):
  spec = importlib.util.spec_from_file_location("config_under_test", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  validate(config)
  assert config.task.name in TASKS
  for section in (config.model, *(config.model[k] for k in ("generator", "discriminator") if k in config.model)):
    if section is not config.model or config.task.name != "gan":
      assert section.name in MODELS, section.name
  if "backbone" in config.model:
    assert config.model.backbone in BACKBONES, config.model.backbone
