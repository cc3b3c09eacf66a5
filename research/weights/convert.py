"""torchvision classifier weights -> this project's Flax variables {'params', 'batch_stats'}.

Layouts: a convolution weight [O, I, kh, kw] becomes an HWIO kernel [kh, kw, I, O]; a Linear
weight [out, in] becomes a kernel [in, out]; a BatchNorm module (one with `running_mean`) gives
params scale / bias and batch_stats mean / var (`num_batches_tracked` is dropped). A Linear layer
fed by a flattened feature map (VGG's and AlexNet's classifier fc1, GoogLeNet's auxiliary fc1)
reads torch's (C, H, W) order where ours flattens NHWC maps as (H, W, C), so its input rows are
permuted. Module paths are renamed per architecture, then split at '.'.

torch is not needed here: the state_dict's values may be numpy arrays or CPU torch tensors.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

import research.models  # noqa: F401  (registers the models)
from research.core.registry import MODELS
from research.models.classifiers.vgg import _CFGS

PyTree = Any

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
VGGS = tuple(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn"))
ARCHITECTURES = RESNETS + VGGS + ("alexnet", "googlenet")

_RESNET_RENAME = ((r"^layer(\d)\.(\d+)", r"layer\1_\2"), (r"downsample\.0$", "downsample_conv"),
                  (r"downsample\.1$", "downsample_bn"))
_GOOGLENET_RENAME = ((r"branch([234])\.", r"branch\1_"),)
_ALEXNET_RENAME = tuple((rf"^features\.{t}$", f"conv{i + 1}") for i, t in enumerate((0, 3, 6, 8, 10))) + tuple(
    (rf"^classifier\.{t}$", f"classifier.fc{i + 1}") for i, t in enumerate((1, 4, 6)))


class WeightsError(ValueError):
  """A checkpoint that does not fit the architecture asked for; the message says what differs."""


def _vgg_rename(arch: str) -> Tuple[Tuple[str, str], ...]:
  """torchvision's `features.<index>` (convolutions, BatchNorms, ReLUs and pools counted alike) ->
  our `conv<config index>` and `BatchNorm_<k>`; `classifier.0/3/6` -> `classifier.fc1/2/3`."""
  batch_norm = arch.endswith("_bn")
  rename, t, k = [], 0, 0
  for i, v in enumerate(_CFGS[int(arch[3:5])]):
    if v == "M":
      t += 1
      continue
    rename.append((rf"^features\.{t}$", f"conv{i}"))
    if batch_norm:
      rename.append((rf"^features\.{t + 1}$", f"BatchNorm_{k}"))
      k += 1
    t += 3 if batch_norm else 2
  rename += [(rf"^classifier\.{t}$", f"classifier.fc{i + 1}") for i, t in enumerate((0, 3, 6))]
  return tuple(rename)


def layout(arch: str) -> Tuple[Tuple[Tuple[str, str], ...], Dict[str, int]]:
  """(renames, flattened) of an architecture: (regex, replacement) pairs over torch module paths,
  applied in order; and {torch module: side of the square map whose flattening feeds it}."""
  if arch in RESNETS:
    return _RESNET_RENAME, {}
  if arch in VGGS:
    return _vgg_rename(arch), {"classifier.0": 7}
  if arch == "alexnet":
    return _ALEXNET_RENAME, {"classifier.1": 6}
  if arch == "googlenet":
    return _GOOGLENET_RENAME, {"aux1.fc1": 4, "aux2.fc1": 4}
  raise WeightsError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")


def torch_to_flax(state_dict: Mapping[str, Any], rename: Sequence[Tuple[str, str]] = (),
                  flattened: Mapping[str, int] = ()) -> Tuple[Dict[str, PyTree], Dict[str, str]]:
  """A torch state_dict -> ({'params': ..., 'batch_stats': ...} of float32 numpy arrays,
  {'/'-joined Flax path: torch key}). See the module docstring for the layouts; `flattened`
  names the Linear modules fed by a flattened [C, side, side] map, with that side."""
  variables: Dict[str, PyTree] = {"params": {}, "batch_stats": {}}
  sources: Dict[str, str] = {}
  flattened = dict(flattened)
  for key, value in state_dict.items():
    if "." not in key:
      raise WeightsError(f"{key!r} is not a module's array (torch's 'module.name' keys)")
    module, leaf = key.rsplit(".", 1)
    if leaf == "num_batches_tracked":
      continue
    value = np.asarray(value, np.float32)
    if f"{module}.running_mean" in state_dict:
      collection, leaf = {"weight": ("params", "scale"), "bias": ("params", "bias"),
                          "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}[leaf]
    elif leaf == "weight":
      collection, leaf = "params", "kernel"
      if value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)
      else:
        if module in flattened:
          side = flattened[module]
          if value.shape[1] % (side * side):
            raise WeightsError(f"{key} {value.shape}: its inputs are not a flattened {side}x{side} map")
          value = value.reshape(value.shape[0], -1, side, side).transpose(0, 2, 3, 1).reshape(value.shape[0], -1)
        value = value.T
    else:
      collection = "params"
    name = module
    for pattern, replacement in rename:
      name = re.sub(pattern, replacement, name)
    node = variables[collection]
    for part in name.split("."):
      node = node.setdefault(part, {})
    node[leaf] = np.ascontiguousarray(value)
    sources["/".join([collection, *name.split("."), leaf])] = key
  if not variables["batch_stats"]:
    del variables["batch_stats"]
  return variables, sources


def model_kwargs(arch: str, state_dict: Mapping[str, Any]) -> Dict[str, Any]:
  """The model's constructor arguments that a checkpoint fixes: num_classes, and the classifier
  width (`hidden`) of VGG and AlexNet, or whether GoogLeNet has its auxiliary heads."""
  def outputs(module: str) -> int:
    if f"{module}.weight" not in state_dict:
      raise WeightsError(f"not a torchvision {arch} checkpoint: it has no {module}.weight "
                         f"(its first keys: {', '.join(list(state_dict)[:4])})")
    return int(np.shape(state_dict[f"{module}.weight"])[0])

  if arch == "alexnet" or arch in VGGS:
    kwargs: Dict[str, Any] = {"num_classes": outputs("classifier.6"),
                              "hidden": outputs("classifier.1" if arch == "alexnet" else "classifier.0")}
  else:
    kwargs = {"num_classes": outputs("fc")}
  if arch == "googlenet":
    kwargs["aux_logits"] = "aux1.fc2.weight" in state_dict
  return kwargs


def _flat_shapes(tree: PyTree) -> Dict[str, Tuple[int, ...]]:
  return {"/".join(str(k.key) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def convert(arch: str, state_dict: Mapping[str, Any]) -> Tuple[Dict[str, PyTree], Dict[str, Any]]:
  """A torchvision `arch` state_dict -> (variables for MODELS `arch`, its constructor kwargs).

  The variables are checked against the model built with those kwargs: every array present, none
  left over, shapes equal; anything else is a WeightsError naming the arrays that differ.
  """
  rename, flattened = layout(arch)
  kwargs = model_kwargs(arch, state_dict)
  variables, sources = torch_to_flax(state_dict, rename, flattened)
  model = MODELS.build(arch, **kwargs)
  expected = _flat_shapes(jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  got = _flat_shapes(variables)
  missing = [p for p in expected if p not in got]
  unexpected = [sources[p] for p in got if p not in expected]
  reshaped = [f"{sources[p]} {got[p]} (want {expected[p]})" for p in got if p in expected and got[p] != expected[p]]
  if missing or unexpected or reshaped:
    parts = [f"{len(v)} arrays {what} (e.g. {', '.join(v[:3])})" for what, v in
             (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)) if v]
    raise WeightsError(f"not a torchvision {arch} checkpoint: {'; '.join(parts)}. Check --arch.")
  return variables, kwargs
