"""ResNets: parameter counts equal torchvision's / the paper's, forward shapes, backbone features."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.models  # noqa: F401
from research.core.registry import BACKBONES, MODELS
from research.core.state import count_params


def _count(name, size, **kw):
  model = MODELS.build(name, **kw)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  return count_params(shapes["params"])


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_resnet_parameter_counts_equal_torchvision(name):
  torchvision = pytest.importorskip("torchvision")
  expected = sum(p.numel() for p in getattr(torchvision.models, name)(weights=None).parameters())
  assert _count(name, 64, num_classes=1000) == expected


def test_cifar_resnet_parameter_counts():
  assert _count("resnet20", 32) == 269_722  # He et al. 2016: 0.27M (option A)
  assert _count("resnet20", 32, shortcut="B") == 272_474
  assert _count("resnet56", 32) == 853_018  # 0.85M


def test_resnet18_cifar_and_backbone_features():
  model = MODELS.build("resnet20", num_classes=10)
  x = jnp.zeros((2, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  logits, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (2, 10) and "batch_stats" in state
  backbone = BACKBONES.build("resnet18")
  feats = jax.eval_shape(lambda x: backbone.apply(backbone.init(jax.random.PRNGKey(0), x), x), jnp.zeros((1, 64, 64, 3)))
  assert {k: v.shape[1:3] for k, v in feats.items()} == {"c2": (16, 16), "c3": (8, 8), "c4": (4, 4), "c5": (2, 2)}
  assert jax.eval_shape(lambda x: MODELS.build("resnet18_cifar", num_classes=10).init_with_output(
      jax.random.PRNGKey(0), x)[0], jnp.zeros((1, 32, 32, 3))).shape == (1, 10)


@pytest.mark.parametrize("name,size", [("vgg16", 32), ("vgg11_bn", 32), ("alexnet", 224)])
def test_vgg_alexnet_parameter_counts_equal_torchvision(name, size):
  torchvision = pytest.importorskip("torchvision")
  expected = sum(p.numel() for p in getattr(torchvision.models, name)(weights=None).parameters())
  assert _count(name, size, num_classes=1000) == expected


def test_adaptive_avg_pool_matches_torch():
  torch = pytest.importorskip("torch")
  import numpy as np
  from research.models.pooling import adaptive_avg_pool
  x = np.random.default_rng(0).normal(size=(2, 13, 10, 3)).astype(np.float32)
  ref = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x).permute(0, 3, 1, 2), 6).permute(0, 2, 3, 1)
  np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), 6), ref.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dilation", [(False, False, False), (False, False, True), (False, True, True)])
def test_resnet50_matches_torchvision_with_and_without_dilation(dilation):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  from research.weights.convert import layout, torch_to_flax
  from tests.torch_weights import randomize_
  torch.manual_seed(0)
  ref = torchvision.models.resnet50(num_classes=5, replace_stride_with_dilation=list(dilation)).eval()
  randomize_(ref)
  x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.tensor(x).permute(0, 3, 1, 2)).numpy()
  model = MODELS.build("resnet50", num_classes=5, replace_stride_with_dilation=dilation)
  variables, _ = torch_to_flax(ref.state_dict(), *layout("resnet50"))
  ours = jax.jit(model.apply)(variables, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
  # The backbone form: 'c5' at output stride 32 / 16 / 8.
  backbone = BACKBONES.build("resnet50", replace_stride_with_dilation=dilation)
  feats = jax.eval_shape(lambda x: backbone.init_with_output(jax.random.PRNGKey(0), x)[0], x)
  assert feats["c5"].shape[1] == 64 // {0: 32, 1: 16, 2: 8}[sum(dilation)]
