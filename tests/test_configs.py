"""Every config file loads, and names only keys, models and tasks the framework knows."""
import glob
import os

import jax
import jax.numpy as jnp
import pytest

import research.models  # noqa: F401
import research.tasks  # noqa: F401
from research.core.config import validate
from research.core.registry import BACKBONES, MODELS, TASKS
from tests.core_helpers import project_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))

_load = project_config


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_is_valid(path):
  config = _load(path)
  validate(config)
  assert config.task.name in TASKS
  for section in (config.model, *(config.model[k] for k in ("generator", "discriminator") if k in config.model)):
    if section is not config.model or config.task.name != "gan":
      assert section.name in MODELS, section.name
  if "backbone" in config.model:
    assert config.model.backbone in BACKBONES, config.model.backbone


_LEVELED = [p for p in CONFIGS if "feature_levels" in _load(p).model]


@pytest.mark.parametrize("path", _LEVELED, ids=[os.path.basename(p) for p in _LEVELED])
def test_feature_levels_exist_in_backbone(path):
  """A detection config's feature_levels are maps its backbone returns (shapes only, no compute)."""
  model = _load(path).model
  backbone = BACKBONES.build(model.backbone)
  x = jnp.zeros((1, 64, 64, 3))
  feats = jax.eval_shape(lambda x: backbone.init_with_output(jax.random.PRNGKey(0), x)[0], x)
  assert set(model.feature_levels) <= set(feats), (model.feature_levels, sorted(feats))
