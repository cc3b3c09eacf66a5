"""The model zoo: every registered model builds, runs and trains one step on a tiny input; parameter
counts equal the papers' / torchvision's; named kernel initializers (torchvision's logits: test_weights.py).

A new model registered in MODELS needs an entry in SPECS (test_every_registered_model_has_a_spec
names the missing ones).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

import research.models  # noqa: F401  (registers the models)
from research.config_sections import model_config
from research.core.registry import BACKBONES, MODELS
from research.core.state import count_params
from research.models.pooling import max_pool_ceil
from research.models.initializers import KNOWN_SPECS, get_initializer, kernel_initializers
from research.tasks.base import build_registered

Inputs = Tuple[Tuple[Any, ...], Dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Spec:
  """How to exercise one registered model on a tiny batch.

  inputs: shapes of the positional inputs (float32 N(0, 1) noise), batch first; or make_inputs:
    rng -> (positional args, keyword args) for models that take anything else (token ids, targets).
  out: the evaluation output's shape, or a dict of shapes for dict outputs; train_out: the same
    for the training output (None: as out).
  kwargs: constructor overrides that keep the model small (num_classes, widths, depth).
  no_grad: regex over parameter paths (jax.tree_util.keystr) that one SGD step may leave unchanged
    because the loss does not depend on them; every other parameter must change.
  """

  out: Any
  inputs: Tuple[Tuple[int, ...], ...] = ((2, 32, 32, 3),)
  kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  train_out: Any = None
  no_grad: str = ""
  make_inputs: Optional[Callable[[np.random.Generator], Inputs]] = None

  def build_inputs(self, rng: np.random.Generator) -> Inputs:
    if self.make_inputs is not None:
      return self.make_inputs(rng)
    return tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in self.inputs), {}


def _classifier(size: int = 32, no_grad: str = "", **kwargs: Any) -> Spec:
  return Spec((2, 3), ((2, size, size, 3),), {"num_classes": 3, **kwargs}, no_grad=no_grad)


def _segmenter(no_grad: str = "", **kwargs: Any) -> Spec:
  return Spec((2, 32, 32, 3), kwargs={"num_classes": 3, **kwargs}, no_grad=no_grad)


# ResNets other than ResNet-18 and -20 run with one block per stage (compiling a training step
# costs about 0.1 s per BatchNorm layer on XLA:CPU, 30 s for ResNet-152): the blocks are the same,
# and test_parameter_counts checks the registered depths.
_SHALLOW_RESNET = _classifier(width=8, stage_sizes=(1, 1, 1, 1))
_SHALLOW_CIFAR_RESNET = _classifier(depth=8)
# Conv biases feeding a train-mode BatchNorm cancel out (zero gradient).
_VGG_BN = _classifier(hidden=16, no_grad=r"\['conv\d+'\]\['bias'\]")

_TINY_BACKBONE = {"backbone": "small_cnn", "backbone_args": {"widths": (8, 8, 8, 8, 8)}}


def _detection_inputs(rng: np.random.Generator) -> Inputs:
  boxes = np.zeros((2, 3, 4), np.float32)
  boxes[:, :2] = [[4, 6, 30, 28], [34, 30, 60, 58]]
  targets = {"boxes": jnp.asarray(boxes), "labels": jnp.ones((2, 3), jnp.int32),
             "valid": jnp.asarray([[True, True, False], [True, False, False]])}
  return (jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32),), {"targets": targets}


def _tokens(rng: np.random.Generator, shape: Tuple[int, ...], vocab: int) -> jnp.ndarray:
  return jnp.asarray(rng.integers(1, vocab, size=shape), jnp.int32)


_DETECTIONS = {"boxes": (2, 10, 4), "scores": (2, 10), "labels": (2, 10), "valid": (2, 10)}
_TINY_DETECTOR = dict(_TINY_BACKBONE, feature_levels=("c2", "c3"), fpn_channels=8, anchor_sizes=((12,), (24,)),
                      rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20, rpn_pre_nms_top_n_test=50,
                      rpn_post_nms_top_n_test=20, rpn_batch_size_per_image=32, box_batch_size_per_image=16,
                      canonical_scale=16.0, canonical_level=3, box_head_hidden=16, detections_per_image=10)

SPECS: Dict[str, Spec] = {
    "lenet5": Spec((2, 3), ((2, 28, 28, 1),), {"num_classes": 3}),
    "resnet18": _classifier(width=8),
    "resnet34": _SHALLOW_RESNET, "resnet50": _SHALLOW_RESNET, "resnet101": _SHALLOW_RESNET,
    "resnet152": _SHALLOW_RESNET, "resnet18_cifar": _classifier(width=8, stage_sizes=(1, 1, 1, 1)),
    "resnet20": _classifier(),
    **{name: _SHALLOW_CIFAR_RESNET for name in ("resnet32", "resnet44", "resnet56", "resnet110")},
    **{name: _classifier(hidden=16) for name in ("vgg11", "vgg13", "vgg16", "vgg19")},
    **{name: _VGG_BN for name in ("vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn")},
    "alexnet": _classifier(64, hidden=16),  # The smallest input AlexNet takes is 63x63.
    "googlenet": dataclasses.replace(_classifier(), train_out={"logits": (2, 3), "aux1": (2, 3), "aux2": (2, 3)}),
    "fcn32s": _segmenter(), "fcn16s": _segmenter(), "fcn8s": _segmenter(),
    "unet": _segmenter(width=4),
    # Reads backbone stage c3 (output_stride 8): small_cnn's stages 4 and 5 are unused.
    "deeplabv3": _segmenter(aspp_features=8, no_grad=r"\['backbone'\]\['stage[45]_"),
    "dcgan_generator": Spec((2, 32, 32, 3), ((2, 16),), {"image_size": 32, "base_features": 8}),
    "dcgan_discriminator": Spec((2,), kwargs={"image_size": 32, "base_features": 8}),
    # Reads backbone stages c2 and c3 only.
    "faster_rcnn": Spec(_DETECTIONS, kwargs={"num_classes": 3, **_TINY_DETECTOR}, make_inputs=_detection_inputs,
                        no_grad=r"\['backbone'\]\['stage[45]_",
                        train_out={k: () for k in ("rpn_objectness", "rpn_box", "roi_classifier", "roi_box")}),
    "show_tell": Spec((2, 6, 11), kwargs={"vocab_size": 11, "embed_dim": 8, "hidden_size": 8},
                      make_inputs=lambda rng: ((jnp.asarray(rng.normal(size=(2, 32, 32, 3)), jnp.float32),
                                                _tokens(rng, (2, 7), 11)), {})),
    "char_rnn": Spec((2, 9, 13), kwargs={"vocab_size": 13, "embed_dim": 8, "hidden_size": 8},
                     make_inputs=lambda rng: ((_tokens(rng, (2, 9), 13),), {})),
    "multitask": Spec({"classification": (2, 3), "segmentation": (2, 32, 32, 4)},
                      kwargs={"heads": ("classification", "segmentation"),
                              "num_classes": {"classification": 3, "segmentation": 4}, **_TINY_BACKBONE}),
}


def _shapes(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def _registered() -> set:
  """The framework's models (tests register helpers named 'test_*', e.g. tests/core_helpers.py)."""
  return {name for name in MODELS.names() if not name.startswith("test_")}


def test_every_registered_model_has_a_spec():
  missing = sorted(_registered() - set(SPECS))
  assert not missing, (f"registered models without an entry in SPECS of tests/test_zoo.py (a tiny input, "
                       f"constructor overrides and the output shape): {missing}")
  stale = sorted(set(SPECS) - set(MODELS.names()))
  assert not stale, f"SPECS entries of tests/test_zoo.py that name no registered model: {stale}"


def _host_init(shapes: Any, rng: np.random.Generator) -> Any:
  """Variables for `shapes` drawn on the host: kernels (ndim >= 2) N(0, 1 / fan_in) with fan_in =
  prod(shape[:-1]), 'scale' and 'var' ones, other vectors (biases, means) small noise."""
  def draw(path, s):
    name = jax.tree_util.keystr(path[-1:])
    if len(s.shape) >= 2:
      value = rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))
    elif name in ("['scale']", "['var']"):
      value = np.ones(s.shape)
    else:
      value = 0.1 * rng.normal(size=s.shape)
    return jnp.asarray(value, s.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("name", sorted(_registered() | set(SPECS)))
def test_forward_and_one_sgd_step(name):
  """Training-mode forward, gradient and SGD update, compiled; the evaluation output's shape by
  jax.eval_shape. model.init is traced (eval_shape) but the values come from `_host_init`: on
  XLA:CPU, compiling a model's initializers (a kernel per random draw) costs more than compiling
  its training step. The initializers have their own tests below."""
  if name not in SPECS or name not in MODELS:
    pytest.fail(f"{name!r} is {'not registered' if name in SPECS else 'missing from SPECS'} (see "
                f"test_every_registered_model_has_a_spec)")
  spec = SPECS[name]
  model = MODELS.build(name, **spec.kwargs)
  rng = np.random.default_rng(0)
  args, kwargs = spec.build_inputs(rng)
  shapes = jax.eval_shape(lambda a, k: model.init({"params": jax.random.PRNGKey(0)}, *a, train=False, **k),
                          args, kwargs)
  variables = _host_init(shapes, rng)
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  eval_out = jax.eval_shape(lambda v, a, k: model.apply(v, *a, train=False, **k), variables, args, kwargs)
  assert _shapes(eval_out) == spec.out

  @jax.jit
  def step(params, state, args, kwargs):
    def loss_fn(p):
      rngs = {"dropout": jax.random.PRNGKey(1), "sampling": jax.random.PRNGKey(2)}
      out, _ = model.apply({"params": p, **state}, *args, train=True, rngs=rngs,
                           mutable=list(state), **kwargs)
      leaves = [x for x in jax.tree_util.tree_leaves(out) if jnp.issubdtype(x.dtype, jnp.inexact)]
      return sum(jnp.mean((x.astype(jnp.float32) - 0.5) ** 2) for x in leaves), out

    (loss, train_out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return train_out, loss, jax.tree_util.tree_map(lambda p, g: p - 0.01 * g, params, grads)

  train_out, loss, new_params = step(params, state, args, kwargs)
  assert _shapes(train_out) == (spec.train_out if spec.train_out is not None else spec.out)
  assert np.isfinite(float(loss)), loss
  finite = [jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(new_params)
            if not np.isfinite(v).all()]
  assert not finite, f"parameters not finite after one step: {finite}"
  unchanged = [jax.tree_util.keystr(k) for (k, a), b in zip(jax.tree_util.tree_leaves_with_path(params),
                                                           jax.tree_util.tree_leaves(new_params))
               if np.array_equal(a, b) and not (spec.no_grad and re.search(spec.no_grad, jax.tree_util.keystr(k)))]
  assert not unchanged, f"parameters unchanged after one step: {unchanged}"


def _num_params(name: str, shape: Tuple[int, ...], **kwargs: Any) -> int:
  model = MODELS.build(name, **kwargs)
  return count_params(jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(shape))["params"])


_COUNTS = [  # (name, constructor overrides, input shape, parameters): DESIGN.md section 4's references first.
    ("lenet5", {"num_classes": 10}, (1, 28, 28, 1), 61_706),
    ("alexnet", {}, (1, 224, 224, 3), 61_100_840),
    ("vgg16", {}, (1, 32, 32, 3), 138_357_544),
    ("resnet50", {}, (1, 64, 64, 3), 25_557_032),
    ("googlenet", {"aux_logits": False}, (1, 64, 64, 3), 6_624_904),
    ("resnet20", {"num_classes": 10}, (1, 32, 32, 3), 269_722),
    # torchvision's (googlenet with aux_logits=True), and the depth variants SPECS runs shallow.
    ("googlenet", {}, (1, 64, 64, 3), 13_004_888),
    ("resnet34", {}, (1, 64, 64, 3), 21_797_672),
    ("resnet101", {}, (1, 64, 64, 3), 44_549_160),
    ("resnet152", {}, (1, 64, 64, 3), 60_192_808),
    # He et al. 2016 CIFAR ResNets, option A (research/benchmarks/torch_reference.py's CifarResNet gives the same).
    ("resnet32", {"num_classes": 10}, (1, 32, 32, 3), 464_154),
    ("resnet44", {"num_classes": 10}, (1, 32, 32, 3), 658_586),
    ("resnet56", {"num_classes": 10}, (1, 32, 32, 3), 853_018),
    ("resnet110", {"num_classes": 10}, (1, 32, 32, 3), 1_727_962),
]


@pytest.mark.parametrize("name,kwargs,shape,expected", _COUNTS,
                         ids=[n + ("_aux" if n == "googlenet" and not kw else "") for n, kw, _, _ in _COUNTS])
def test_parameter_counts(name, kwargs, shape, expected):
  assert _num_params(name, shape, **kwargs) == expected


def test_backbone_features():
  x = jnp.zeros((1, 64, 64, 3))
  expected = {"googlenet": {"c2": (16, 16, 192), "c3": (8, 8, 480), "c4": (4, 4, 832), "c5": (2, 2, 1024)},
              "vgg16": {"c1": (32, 32, 64), "c2": (16, 16, 128), "c3": (8, 8, 256), "c4": (4, 4, 512),
                        "c5": (2, 2, 512), "conv1": (64, 64, 64), "conv2": (32, 32, 128), "conv3": (16, 16, 256),
                        "conv4": (8, 8, 512), "conv5": (4, 4, 512)}}
  # Parameters: torchvision's vgg16().features; GoogLeNet without aux heads and fc (6,624,904 - 1,025,000).
  counts = {"googlenet": 5_599_904, "vgg16": 14_714_688}
  for name, shapes in expected.items():
    backbone = BACKBONES.build(name)
    variables, feats = jax.eval_shape(lambda x: backbone.init_with_output(jax.random.PRNGKey(0), x)[::-1], x)
    assert {k: v.shape[1:] for k, v in feats.items()} == shapes, name
    assert count_params(variables["params"]) == counts[name], name


@pytest.mark.parametrize("size,window,stride,padding", [(7, 3, 2, 0), (8, 3, 2, 0), (5, 2, 2, 0), (14, 3, 2, 1),
                                                         (6, 3, 1, 1), (9, 1, 3, 0), (112, 3, 2, 0)])
def test_max_pool_ceil_matches_torch(size, window, stride, padding):
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).normal(size=(2, size, size + 1, 3)).astype(np.float32)
  ref = torch.nn.functional.max_pool2d(torch.tensor(x).permute(0, 3, 1, 2), window, stride, padding, ceil_mode=True)
  np.testing.assert_array_equal(max_pool_ceil(jnp.asarray(x), window, stride, padding), ref.permute(0, 2, 3, 1).numpy())


def test_classification_task_adds_weighted_aux_losses():
  import flax.linen as nn
  from research.config_sections import model_config, task_config
  from research.core.config import default_config
  from research.tasks.classification import ClassificationTask, softmax_cross_entropy

  class ThreeHeads(nn.Module):
    """x [N, D] -> {'logits', 'aux1', 'aux2'} [N, 3], as GoogLeNet in training."""

    @nn.compact
    def __call__(self, x, train=False):
      return {k: nn.Dense(3, name=k)(x) for k in ("logits", "aux1", "aux2")}

  config = default_config()
  config.model = model_config("lenet5")
  config.task = task_config("classification", num_classes=3, aux_loss_weight=0.3)
  task = ClassificationTask(config)
  task.model = ThreeHeads()
  batch = {"image": jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)), jnp.float32),
           "label": jnp.array([0, 1, 2, 1])}
  params = task.model.init(jax.random.PRNGKey(0), batch["image"])["params"]
  loss, (metrics, _) = task.loss_fn(params, {}, batch, jax.random.PRNGKey(1))
  out = task.model.apply({"params": params}, batch["image"])
  ce = {k: softmax_cross_entropy(v, batch["label"]).mean() for k, v in out.items()}
  np.testing.assert_allclose(loss, ce["logits"] + 0.3 * (ce["aux1"] + ce["aux2"]), rtol=1e-6)
  np.testing.assert_allclose(metrics["main_loss"], ce["logits"], rtol=1e-6)


# --- named kernel initializers ---------------------------------------------------------------
_SHAPE = (3, 3, 64, 128)  # fan_in 576, fan_out 1152
_FAN_IN, _FAN_OUT = 576, 1152


@pytest.mark.parametrize("spec,std", [
    ("normal:0.05", 0.05),
    ("xavier_uniform", np.sqrt(2 / (_FAN_IN + _FAN_OUT))), ("glorot_uniform", np.sqrt(2 / (_FAN_IN + _FAN_OUT))),
    ("xavier_normal", np.sqrt(2 / (_FAN_IN + _FAN_OUT))), ("glorot_normal", np.sqrt(2 / (_FAN_IN + _FAN_OUT))),
    ("he_normal", np.sqrt(2 / _FAN_OUT)), ("kaiming_normal", np.sqrt(2 / _FAN_OUT)),
    ("he_uniform", np.sqrt(2 / _FAN_OUT)), ("kaiming_uniform", np.sqrt(2 / _FAN_OUT)),
    ("lecun_normal", np.sqrt(1 / _FAN_IN)),
    ("torch_default", 1 / np.sqrt(3 * _FAN_IN)),
])
def test_initializer_std_matches_spec(spec, std):
  w = np.asarray(get_initializer(spec)(jax.random.PRNGKey(0), _SHAPE))
  assert abs(w.mean()) < 0.02 * std
  assert w.std() == pytest.approx(std, rel=0.02)


def test_torch_default_is_torch_conv_and_linear_init():
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  for module, shape, fan_in in ((torch.nn.Conv2d(64, 128, 3), _SHAPE, _FAN_IN),
                                (torch.nn.Linear(300, 200), (300, 200), 300)):
    ours = np.asarray(get_initializer("torch_default")(jax.random.PRNGKey(0), shape))
    theirs = module.weight.detach().numpy()
    bound = 1 / np.sqrt(fan_in)
    assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound
    assert ours.std() == pytest.approx(theirs.std(), rel=0.03)


def test_kernel_init_from_config_reaches_every_kernel_and_default_keeps_resnet_split():
  # config.model carries the field, so `--config.model.kernel_init=...` overrides it from the command line.
  section = model_config("resnet20", depth=8)
  assert section.kernel_init == "he_normal,lecun_normal"
  section.kernel_init = "normal:0.05"
  configured = build_registered(MODELS, section, "model", num_classes=10)
  default = MODELS.build("resnet20", num_classes=10, depth=8)
  x = jnp.zeros((1, 32, 32, 3))
  params, default_params = jax.jit(lambda x: [m.init(jax.random.PRNGKey(0), x)["params"]
                                              for m in (configured, default)])(x)
  kernels = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)
             if jax.tree_util.keystr(k).endswith("['kernel']")}
  assert len(kernels) == 8  # 7 convolutions and the fc
  assert np.concatenate([v.ravel() for v in kernels.values()]).std() == pytest.approx(0.05, rel=0.02)
  assert kernels["['fc']['kernel']"].std() == pytest.approx(0.05, rel=0.1)
  # The default "he_normal,lecun_normal": the initializers ResNets had before the field existed.
  conv = np.asarray(default_params["stage3_0"]["conv2"]["kernel"])  # [3, 3, 64, 64]
  assert conv.std() == pytest.approx(np.sqrt(2 / (9 * 64)), rel=0.03)
  assert np.asarray(default_params["fc"]["kernel"]).std() == pytest.approx(np.sqrt(1 / 64), rel=0.25)


@pytest.mark.parametrize("name", ["lenet5", "vgg11", "alexnet", "googlenet", "resnet18", "resnet20"])
def test_every_classifier_family_has_kernel_init(name):
  entry = MODELS.get(name)
  assert "kernel_init" in getattr(entry, "fn", entry).__dataclass_fields__


@pytest.mark.parametrize("spec,named", [("gaussian", "'gaussian'"), ("normal:abc", "'normal:abc'"),
                                        ("normal:-1", "'normal:-1'"), ("he_normal:2", "'he_normal:2'"),
                                        ("normal", "'normal'"), ("he_normal,", "'he_normal,'"),
                                        ("he_normal,gaussian", "'gaussian'")])
def test_unknown_initializer_is_a_clear_error(spec, named):
  with pytest.raises(ValueError, match="kernel initializer") as info:
    kernel_initializers(spec)
  assert named in str(info.value)
  model = MODELS.build("lenet5", kernel_init=spec)
  with pytest.raises(ValueError, match="kernel initializer"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))


def test_conv_and_dense_specs():
  conv, dense = kernel_initializers("he_normal,normal:0.01")
  assert np.asarray(conv(jax.random.PRNGKey(0), _SHAPE)).std() == pytest.approx(np.sqrt(2 / _FAN_OUT), rel=0.02)
  assert np.asarray(dense(jax.random.PRNGKey(0), (512, 256))).std() == pytest.approx(0.01, rel=0.02)


def test_unknown_initializer_lists_the_known_ones():
  with pytest.raises(ValueError) as info:
    get_initializer("gaussian")
  assert all(spec in str(info.value) for spec in KNOWN_SPECS)


@pytest.mark.parametrize("name", ["vgg11", "alexnet"])
def test_classifier_dropout_placement_is_torchvision_s(name):
  """Dropout 1.0 in training shows where the dropouts sit: VGG drops each hidden layer's output
  (so the last layer sees zeros: logits = its bias); AlexNet drops each hidden layer's input (so
  the last layer sees relu(fc2's bias))."""
  model = MODELS.build(name, num_classes=3, hidden=8, dropout_rate=1.0)
  x = jnp.ones((2, 64, 64, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  head = variables["params"]["classifier"]
  for i, layer in enumerate(("fc1", "fc2", "fc3")):  # Non-zero biases, so the two placements differ.
    head[layer]["bias"] = jax.random.normal(jax.random.PRNGKey(i), head[layer]["bias"].shape)
  logits = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  bias = np.asarray(head["fc3"]["bias"])
  if name == "vgg11":
    expected = bias
  else:
    expected = np.maximum(np.asarray(head["fc2"]["bias"]), 0) @ np.asarray(head["fc3"]["kernel"]) + bias
  np.testing.assert_allclose(np.asarray(logits), np.broadcast_to(expected, (2, 3)), rtol=1e-5, atol=1e-6)
