"""What a trained network does with one input, DIGITS-style (research-inspect).

For one preprocessed input (an image file or a dataset example; research.inspection.predict.Run):
  activations  the output of every convolution (flax capture_intermediates on Conv modules) and
               every pooling stage (sown by the models: research.models.pooling.sow_stage), for
               the first example, in the order the forward pass produced them;
  weights      per parameter array: shape, count, mean, std, min, max, fraction near zero
               (|w| < 1% of the array's largest |w|), L2 norm;
  batch norm   per BatchNorm layer: channels, mean of the running mean, mean / min / max of the
               running variance;
  relu         fraction of each ReLU's outputs that are zero on this input (research.inspection.relu);
  first conv   the first convolution's kernel [kh, kw, C_in, C_out];
  classifiers  the top-k prediction and a gradient saliency map: |d logit_top / d input|, the
               maximum over channels, scaled to [0, 1].

The forward pass is the model's own evaluation call: classifiers, segmentation and detection
models on the image; a captioning model's encoder (`start`); a multi-task model on the image and
its evaluation targets (teacher-forced caption head).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.inspection.predict import Run, classify
from research.inspection.relu import relu_zero_fractions
from research.models.conv import Conv

PyTree = Any
CONV_TYPES = (Conv, nn.Conv, nn.ConvTranspose)
NEAR_ZERO = 0.01  # |w| < NEAR_ZERO * max |w| counts as near zero


def forward(run: Run, batch: Dict[str, np.ndarray]) -> Tuple[Callable[..., Any], Tuple[Any, ...]]:
  """(fn, args): fn(variables, image, *extra, **apply_kwargs) -> model output, the model's
  evaluation call for this task (module docstring), and the args to call it with."""
  task, model = run.task, run.task.model
  name = run.config.task.name
  image = jnp.asarray(batch["image"])
  if name == "captioning":
    return (lambda v, x, **kw: model.apply(v, x, method="start", **kw)), (image,)
  if name == "multitask":
    targets = task._targets(batch, train=False)
    return (lambda v, x, t, **kw: model.apply(v, x, train=False, targets=t, **kw)), (image, targets)
  return (lambda v, x, **kw: model.apply(v, x, train=False, **kw)), (image,)


def _variables(run: Run) -> Dict[str, PyTree]:
  return {"params": run.state.params, **run.state.model_state}


def _is_conv(module: nn.Module, method: str) -> bool:
  return method == "__call__" and isinstance(module, CONV_TYPES)


def _stage_name(path: Tuple[Any, ...]) -> Tuple[str, int]:
  """('conv1', 0) from the key path ('intermediates', 'conv1', '__call__', 0): the module path
  without '__call__', and the index among the values sown under that name."""
  keys = [getattr(k, "key", getattr(k, "idx", k)) for k in path]
  index = keys.pop() if keys and isinstance(keys[-1], int) else 0
  return "/".join(str(k) for k in keys if k not in ("intermediates", "__call__")), int(index)


def _image_layout(value: np.ndarray) -> np.ndarray:
  """[N, H, W, C] as captured, or from a per-image vmapped head (the multi-task detection head,
  whose captures are [N, 1, H, W, C]) with the vmapped axis folded."""
  return value[:, 0] if value.ndim == 5 and value.shape[1] == 1 else value


def activations(run: Run, batch: Dict[str, np.ndarray]) -> List[Tuple[str, np.ndarray]]:
  """(stage name, float32 [N, H, W, C]) for every convolution and pooling stage, in execution
  order (the order of the jaxpr equations that produce them; nested dicts lose it)."""
  fn, args = forward(run, batch)
  capture = lambda v, *a: fn(v, *a, capture_intermediates=_is_conv, mutable=["intermediates"])[1]  # noqa: E731
  variables = _variables(run)
  closed = jax.make_jaxpr(capture)(variables, *args)
  producer = {id(v): i for i, eqn in enumerate(closed.jaxpr.eqns) for v in eqn.outvars}
  order = [producer.get(id(v), -1) for v in closed.jaxpr.outvars]
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(jax.jit(capture)(variables, *args)))[0]
  named = [(_stage_name(path), _image_layout(np.asarray(v, np.float32)), o) for (path, v), o in zip(leaves, order)]
  repeated = {base for (base, i), _, _ in named if i > 0}
  stages = sorted(named, key=lambda item: item[2])
  return [(f"{base}.{i}" if base in repeated else base, v) for (base, i), v, _ in stages if v.ndim == 4]


def relu_stats(run: Run, batch: Dict[str, np.ndarray]) -> List[Dict[str, Any]]:
  """Per ReLU of the forward pass: {'name', 'shape', 'zero_fraction'} on this input."""
  fn, args = forward(run, batch)
  return relu_zero_fractions(lambda v, *a: fn(v, *a), _variables(run), *args)


def _flat(tree: PyTree) -> List[Tuple[str, np.ndarray]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [("/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path), np.asarray(v))
          for path, v in leaves]


def weight_stats(params: PyTree) -> List[Dict[str, Any]]:
  """Per parameter array (path order): name, shape, count, mean, std, min, max, near_zero, l2."""
  rows = []
  for name, w in _flat(params):
    w = np.asarray(w, np.float64)
    top = float(np.abs(w).max()) if w.size else 0.0
    rows.append({"name": name, "shape": list(w.shape), "count": int(w.size), "mean": float(w.mean()),
                 "std": float(w.std()), "min": float(w.min()), "max": float(w.max()),
                 "near_zero": float(np.mean(np.abs(w) < NEAR_ZERO * top)) if top > 0 else 1.0,
                 "l2": float(np.sqrt(np.sum(w * w)))})
  return rows


def batch_norm_stats(model_state: PyTree) -> List[Dict[str, Any]]:
  """Per BatchNorm layer (a 'mean' and 'var' pair in batch_stats): channels, running-mean mean,
  running-variance mean / min / max."""
  flat = dict(_flat(model_state.get("batch_stats", {}))) if isinstance(model_state, dict) else {}
  rows = []
  for name, mean in flat.items():
    if not name.endswith("/mean") or name[:-5] + "/var" not in flat:
      continue
    var = flat[name[:-5] + "/var"].astype(np.float64)
    rows.append({"name": name[:-5], "channels": int(mean.size), "mean_of_mean": float(mean.mean()),
                 "mean_abs_mean": float(np.abs(mean).mean()), "mean_of_var": float(var.mean()),
                 "min_var": float(var.min()), "max_var": float(var.max())})
  return rows


def first_conv_kernel(run: Run, stages: List[Tuple[str, np.ndarray]]) -> Optional[Tuple[str, np.ndarray]]:
  """(path, kernel [kh, kw, C_in, C_out]) of the first convolution that ran, or None."""
  params = run.state.params
  for name, _ in stages:
    node = params
    for part in name.split("/"):
      node = node.get(part) if isinstance(node, dict) else None
      if node is None:
        break
    if isinstance(node, dict) and "kernel" in node and np.ndim(node["kernel"]) == 4:
      return name, np.asarray(node["kernel"], np.float32)
  return None


def saliency(run: Run, batch: Dict[str, np.ndarray], label: int) -> np.ndarray:
  """float32 [H, W] in [0, 1]: max over channels of |d logit[label] / d image| for example 0."""
  image = jnp.asarray(batch["image"][:1])
  grad = jax.jit(jax.grad(lambda x: run.logits(x)[0, label]))(image)
  grad = np.abs(np.asarray(grad[0], np.float32)).max(axis=-1)
  top = float(grad.max())
  return grad / top if top > 0 else grad


def inspect(run: Run, batch: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """Everything above for example 0 of `batch` (a preprocessed batch of one or more examples):
  {'activations': [(name, [H, W, C])], 'weights', 'batch_norm', 'relu', 'first_conv',
   and for classifiers 'top_k', 'saliency' [H, W]}."""
  first = {k: np.asarray(v)[:1] for k, v in batch.items()}
  stages = activations(run, first)
  result: Dict[str, Any] = {
      "activations": [(name, a[0]) for name, a in stages],
      "weights": weight_stats(run.state.params),
      "batch_norm": batch_norm_stats(run.state.model_state),
      "relu": relu_stats(run, first),
      "first_conv": first_conv_kernel(run, stages),
  }
  if run.config.task.name == "classification":
    top = classify(run, first)[0]
    result["top_k"] = top
    result["saliency"] = saliency(run, first, top[0]["class"])
  return result
