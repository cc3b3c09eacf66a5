"""Predictions of a trained run, on the user's own image files or on a dataset split.

`Run.load(workdir)` holds a run's config, task (model built) and latest weights. The user's files
are shaped like the dataset's examples (research.inspection.images.read_image: the dataset's
channels and image size, taken from the first example of the run's eval split), put in place of
that example's image, and go through the run's own `task.preprocess_eval`; the rest of that
example (labels, boxes) is never used. Per task:

  classification  top-k classes with probabilities and class names, drawn next to the image;
  detection       boxes scoring >= task.draw_score_threshold with labels and scores; the JSON
                  gives every valid detection, boxes [x1, y1, x2, y2] in the file's own pixels;
  segmentation    the predicted mask overlaid, with a legend; JSON: each class's pixel fraction;
  captioning      the greedy caption and the beam-search caption (beam task.beam_size, at least 3);
  gan             images are not used: samples of the generator from the eval noise;
  multitask       every head of the joint model as its single task above, from one forward
                  pass; a record holds each head's result under 'heads', one picture per head.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import textwrap
from typing import Any, Callable, Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict
from PIL import Image, ImageDraw

from research.core.runs import load_run
from research.core.state import TrainState
from research.data import datasets, pipeline
from research.inspection.images import read_image
from research.viz.boxes import draw_boxes
from research.viz.figures import new_figure, to_array
from research.viz.grid import to_uint8
from research.viz.masks import overlay, palette

PyTree = Any
TASKS_WITH_IMAGES = ("classification", "detection", "segmentation", "captioning", "multitask")


@dataclasses.dataclass
class Run:
  """A trained run ready for inference: config, task (model built), state with the latest weights."""

  workdir: str
  config: ConfigDict
  task: Any
  state: TrainState

  @classmethod
  def load(cls, workdir: str) -> "Run":
    import research.models  # noqa: F401  (registers the models)
    import research.tasks  # noqa: F401  (registers the tasks)
    config, task, variables = load_run(workdir)
    params = variables.pop("params")
    state = TrainState(step=np.int32(0), params=params, model_state=variables, opt_state=None, tx=None)
    return cls(workdir, config, task, state)

  @property
  def image_key(self) -> str:
    return str(self.task.cfg.get("image_key", "image"))

  def source(self, split: str = "") -> Any:
    """The run's (wrapped) data source of `split` (default: its eval split)."""
    split = split or self.config.dataset.eval_split
    raw = datasets.get_data_source(self.config.dataset.name, split, self.config.dataset.data_dir or None)
    return self.task.wrap_source(raw, split)

  @functools.cached_property
  def template(self) -> Dict[str, Any]:
    """The first example of the eval split, whose image the user's images replace."""
    return dict(self.source()[0])

  def image_shape(self) -> Tuple[int, int, int]:
    """(height, width, channels) of the dataset's images (those of the template example)."""
    image = np.asarray(self.template[self.image_key])
    return image.shape[0], image.shape[1], (image.shape[2] if image.ndim == 3 else 1)

  def read(self, path: str) -> np.ndarray:
    """An image file as the dataset's uint8 [H, W, C] (module docstring)."""
    h, w, c = self.image_shape()
    return read_image(path, c, (h, w))

  def batch(self, images: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
    """The run's eval preprocessing of dataset-shaped uint8 images, stacked, with mask 1."""
    examples = [self.task.preprocess_eval({**self.template, self.image_key: image}) for image in images]
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch["mask"] = np.ones(len(examples), np.float32)
    return batch

  def eval_batch(self, indices: Sequence[int], split: str = "") -> Dict[str, np.ndarray]:
    """The preprocessed examples `indices` of `split` (default: the eval split), with mask 1."""
    source = self.source(split)
    examples = [self.task.preprocess_eval(source[int(i)]) for i in indices]
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch["mask"] = np.ones(len(examples), np.float32)
    return batch

  def logits(self, images: jax.Array) -> jax.Array:
    """Classification logits [N, C] (float32) of preprocessed images [N, H, W, C]."""
    out, _ = self.task.apply_model(self.state.params, self.state.model_state, images, False)
    return (out["logits"] if isinstance(out, dict) else out).astype(jnp.float32)


@dataclasses.dataclass
class Head:
  """One predicting head: its single task's name, the task that reads its outputs, and the task's
  view of the batch. For a single-task run that is the run's task and batch ('image': the images);
  for a multi-task run, a head task of research.tasks.multitask, whose view holds the joint
  model's outputs for the head under 'image' (the head task's `apply_model` passes them through)."""

  name: str
  task: Any
  batch: Dict[str, Any]


def prediction_heads(run: Run, batch: Dict[str, np.ndarray]) -> List[Head]:
  """The run's heads on a preprocessed batch (the joint model runs once, for every head)."""
  name = run.config.task.name
  if name != "multitask":
    return [Head(name, run.task, batch)]
  outputs = jax.jit(run.task.eval_outputs)(run.state, batch)
  return [Head(head, run.task.head_tasks[head], run.task.head_batch(batch, head, outputs[head]))
          for head in run.task.cfg.heads]


def class_names(task: Any) -> List[str]:
  """The task's class names by id (classification, segmentation: index = class id; detection:
  index 0 = background)."""
  for attr in ("_class_names", "class_names"):
    if hasattr(task, attr):
      return list(getattr(task, attr)())
  return []


# --- classification ---
def classify(run: Run, batch: Dict[str, np.ndarray], k: int = 0, task: Any = None) -> List[List[Dict[str, Any]]]:
  """Per image, the top-k (task.top_k by default) as [{'class', 'name', 'probability'}], best first.
  task: the classification task reading batch['image'] (default: the run's)."""
  task = task or run.task

  def probabilities(images: jax.Array) -> jax.Array:
    out, _ = task.apply_model(run.state.params, run.state.model_state, images, False)
    return jax.nn.softmax((out["logits"] if isinstance(out, dict) else out).astype(jnp.float32), -1)

  probs = np.asarray(jax.jit(probabilities)(batch["image"]))
  k = min(k or int(task.cfg.get("top_k", 5)), probs.shape[-1])
  names = class_names(task)
  out = []
  for p in probs:
    top = np.argsort(-p, kind="stable")[:k]
    out.append([{"class": int(c), "name": names[c] if c < len(names) else str(c), "probability": float(p[c])}
                for c in top])
  return out


def classification_picture(image: np.ndarray, top: List[Dict[str, Any]], title: str) -> np.ndarray:
  """uint8 [H, W, 3]: the image beside a bar chart of its top-k probabilities."""
  fig = new_figure((7.0, 2.8))
  ax = fig.add_subplot(1, 2, 1)
  ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, interpolation="nearest")
  ax.set_title(title, fontsize=8)
  ax.axis("off")
  ax = fig.add_subplot(1, 2, 2)
  labels = [t["name"] for t in top][::-1]
  values = [t["probability"] for t in top][::-1]
  ax.barh(range(len(values)), values, color=["#bbbbbb"] * (len(values) - 1) + ["#2a7ab9"])
  ax.set_yticks(range(len(values)), labels=labels, fontsize=8)
  ax.set_xlim(0, 1)
  for i, v in enumerate(values):
    ax.text(min(v + 0.02, 0.8), i, f"{v:.3f}", va="center", fontsize=8)
  ax.set_xlabel("probability")
  return to_array(fig)


# --- detection ---
def detect(run: Run, batch: Dict[str, np.ndarray], sizes: Sequence[Tuple[int, int]], task: Any = None,
           input_hw: Tuple[int, int] = (0, 0)) -> Tuple[Dict[str, np.ndarray], List[List[Dict[str, Any]]]]:
  """(raw predictions, per image [{'label', 'name', 'score', 'box'}]) with boxes in each file's
  own pixels (sizes: the files' (height, width)). task: the detection task reading the batch
  (default: the run's); input_hw: the preprocessed images' (height, width) when the batch records
  no 'scale' (default: batch['image']'s)."""
  task = task or run.task
  pred = jax.device_get(jax.jit(task.predict)(run.state, batch))
  names = class_names(task)
  h, w, _ = run.image_shape()
  scale = np.asarray(batch.get("scale", np.zeros(len(sizes))), np.float64)
  # No scale recorded (a multi-task template without boxes): the preprocessing's resize, read off
  # the preprocessed images (aspect kept, padded at the bottom / right).
  in_h, in_w = input_hw if input_hw[0] else np.shape(batch["image"])[1:3]
  scale = np.where(scale > 0, scale, min(in_h / h, in_w / w))
  results = []
  for i, (fh, fw) in enumerate(sizes):
    factor = np.array([fw / w, fh / h, fw / w, fh / h]) / scale[i]
    found = []
    for j in np.flatnonzero(pred["valid"][i]):
      label = int(pred["labels"][i][j])
      found.append({"label": label, "name": names[label] if label < len(names) else str(label),
                    "score": float(pred["scores"][i][j]),
                    "box": [round(float(v), 2) for v in np.asarray(pred["boxes"][i][j], np.float64) * factor]})
    results.append(sorted(found, key=lambda d: -d["score"]))
  return pred, results


# --- segmentation ---
def legend(names: Sequence[str], colors: np.ndarray, width: int) -> np.ndarray:
  """uint8 [h, width, 3]: a colour square and the name of each class, in rows."""
  per_row = max(1, width // 90)
  rows = -(-len(names) // per_row)
  canvas = Image.new("RGB", (width, rows * 14 + 2), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for i, name in enumerate(names):
    r, c = divmod(i, per_row)
    x, y = c * 90 + 2, r * 14 + 2
    draw.rectangle([x, y, x + 10, y + 10], fill=tuple(int(v) for v in colors[i]), outline=(0, 0, 0))
    draw.text((x + 14, y), str(name)[:12], fill=(0, 0, 0))
  return np.asarray(canvas)


def segmentation_picture(image: np.ndarray, mask: np.ndarray, names: Sequence[str]) -> np.ndarray:
  """uint8: the image and the mask overlay side by side, upscaled, over a legend of the classes."""
  n = len(names)
  scale = max(1, 256 // max(image.shape[:2]))
  both = np.concatenate([image, np.full((image.shape[0], 2, 3), 255, np.uint8), overlay(image, mask, n)], axis=1)
  both = np.asarray(Image.fromarray(both).resize((both.shape[1] * scale, both.shape[0] * scale), Image.NEAREST))
  return np.concatenate([both, legend(names, palette(n), both.shape[1])], axis=0)


# --- captioning ---
def captions(run: Run, batch: Dict[str, np.ndarray], task: Any = None) -> List[Dict[str, str]]:
  """Per image {'greedy': text, 'beam': text, 'beam_size': k}. task: the captioning task reading
  batch['image'] (default: the run's)."""
  task = task or run.task
  original = int(task.cfg.beam_size)
  beam = max(original, 3)
  out: Dict[str, List[str]] = {}
  try:
    for name, size in (("greedy", 1), ("beam", beam)):
      task.cfg.beam_size = size  # read when decode is traced
      tokens = np.asarray(jax.jit(task.decode)(run.state, batch["image"]))
      out[name] = [task.vocab.decode(t) for t in tokens]
  finally:
    task.cfg.beam_size = original
  return [{"greedy": g, "beam": b, "beam_size": beam} for g, b in zip(out["greedy"], out["beam"])]


def caption_picture(image: np.ndarray, caption: Dict[str, str]) -> np.ndarray:
  """uint8: the image above its greedy and beam captions."""
  scale = max(1, 192 // max(image.shape[:2]))
  big = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
  width = max(big.size[0], 360)
  lines = (textwrap.wrap("greedy: " + caption["greedy"], width // 6) +
           textwrap.wrap(f"beam {caption['beam_size']}: " + caption["beam"], width // 6))
  canvas = Image.new("RGB", (width, big.size[1] + 14 * len(lines) + 4), (255, 255, 255))
  canvas.paste(big, (0, 0))
  draw = ImageDraw.Draw(canvas)
  for i, line in enumerate(lines):
    draw.text((2, big.size[1] + 2 + 14 * i), line, fill=(0, 0, 0))
  return np.asarray(canvas)


# --- the user's files ---
Picture = np.ndarray
HeadResults = List[Tuple[Dict[str, Any], Picture]]


def _classification(run: Run, head: Head, shown: np.ndarray, files: Sequence[str], sizes) -> HeadResults:
  return [({"top_k": top}, classification_picture(image, top, os.path.basename(f)))
          for f, image, top in zip(files, shown, classify(run, head.batch, task=head.task))]


def _detection(run: Run, head: Head, shown: np.ndarray, files: Sequence[str], sizes) -> HeadResults:
  pred, found = detect(run, head.batch, sizes, task=head.task, input_hw=shown.shape[1:3])
  names = class_names(head.task)
  threshold = float(head.task.cfg.get("draw_score_threshold", 0.5))
  results = []
  for i in range(len(files)):
    keep = pred["valid"][i] & (pred["scores"][i] >= threshold)
    picture = draw_boxes(shown[i], pred["boxes"][i][keep], pred["labels"][i][keep], names,
                         pred["scores"][i][keep], scale=max(1, 256 // shown.shape[1]))
    results.append(({"detections": found[i], "draw_score_threshold": threshold}, picture))
  return results


def _segmentation(run: Run, head: Head, shown: np.ndarray, files: Sequence[str], sizes) -> HeadResults:
  masks = np.asarray(jax.jit(head.task.predict)(run.state, head.batch))
  names = class_names(head.task)
  results = []
  for image, mask in zip(shown, masks):
    counts = np.bincount(mask.ravel(), minlength=len(names)) / mask.size
    fractions = {names[c]: float(counts[c]) for c in range(len(names)) if counts[c] > 0}
    results.append(({"class_fractions": fractions}, segmentation_picture(image, mask, names)))
  return results


def _captioning(run: Run, head: Head, shown: np.ndarray, files: Sequence[str], sizes) -> HeadResults:
  return [(caption, caption_picture(image, caption))
          for image, caption in zip(shown, captions(run, head.batch, task=head.task))]


HEAD_PREDICTORS: Dict[str, Callable[..., HeadResults]] = {
    "classification": _classification, "detection": _detection, "segmentation": _segmentation,
    "captioning": _captioning}


def predict_files(run: Run, files: Sequence[str], out_dir: str) -> List[Dict[str, Any]]:
  """Predicts every file (module docstring); writes one picture per file and head (GAN: one sample
  grid) to out_dir; returns one JSON-ready record per file (GAN: one record with the samples' path).
  A single task's results are the record's own keys; a multi-task run's are under
  record['heads'][head], with record['pictures'][head]."""
  name = run.config.task.name
  os.makedirs(out_dir, exist_ok=True)
  if name == "gan":
    batch = run.eval_batch(range(min(int(run.task.cfg.num_samples), len(run.source()))))
    pictures = run.task.visualize(batch, jax.device_get(jax.jit(run.task.predict)(run.state, batch)))
    path = os.path.join(out_dir, "samples.png")
    Image.fromarray(np.asarray(pictures["samples"])).save(path)
    return [{"task": "gan", "samples": path, "note": "a GAN ignores input images"}]
  if name not in TASKS_WITH_IMAGES:
    raise ValueError(f"--image predicts for tasks {', '.join(TASKS_WITH_IMAGES)} and gan; this run's task is "
                     f"{name!r}: use --split to draw predictions on a dataset split")
  raw = [run.read(f) for f in files]
  sizes = []
  for f in files:
    with Image.open(f) as im:
      sizes.append((im.size[1], im.size[0]))
  batch = run.batch(raw)
  cfg = run.task.cfg
  shown = to_uint8(batch["image"], cfg.get("mean", (0.0,)), cfg.get("std", (1.0,)))
  records: List[Dict[str, Any]] = [{"file": f} for f in files]
  for head in prediction_heads(run, batch):
    results = HEAD_PREDICTORS[head.name](run, head, shown, files, sizes)
    for f, record, (result, picture) in zip(files, records, results):
      suffix = "" if name != "multitask" else f"_{head.name}"
      stem = os.path.splitext(os.path.basename(f))[0]
      path = os.path.join(out_dir, f"{stem}{suffix}_prediction.png")
      Image.fromarray(np.asarray(picture, np.uint8)).save(path)
      if name == "multitask":
        record.setdefault("heads", {})[head.name] = result
        record.setdefault("pictures", {})[head.name] = path
      else:
        record.update(result, picture=path)
  return records


def summary_line(record: Dict[str, Any]) -> str:
  """One line of text for a prediction record (a multi-task record: one part per head)."""
  if "heads" in record:
    parts = (summary_line({"file": "", **result}).lstrip(": ") for result in record["heads"].values())
    return f"{record['file']}: " + "; ".join(f"{h} {p}" for h, p in zip(record["heads"], parts))
  if "top_k" in record:
    return f"{record['file']}: " + ", ".join(f"{t['name']} {t['probability']:.3f}" for t in record["top_k"])
  if "detections" in record:
    return f"{record['file']}: " + (", ".join(f"{d['name']} {d['score']:.2f} at {d['box']}"
                                              for d in record["detections"]
                                              if d["score"] >= record["draw_score_threshold"]) or "nothing detected")
  if "class_fractions" in record:
    return f"{record['file']}: " + ", ".join(f"{k} {v:.1%}" for k, v in record["class_fractions"].items())
  if "greedy" in record:
    return f"{record['file']}: greedy '{record['greedy']}'; beam {record['beam_size']} '{record['beam']}'"
  return f"GAN samples: {record['samples']}"


# --- a dataset split (the original mode) ---
def predict_split(run: Run, split: str, num: int, out_dir: str) -> List[str]:
  """The task's own pictures of the first `num` examples of `split`; returns the paths written."""
  split = split or run.config.dataset.eval_split
  source = run.source(split)
  batch = next(pipeline.eval_batches(source, run.task.preprocess_eval, min(num, len(source))))
  predictions = jax.jit(run.task.predict)(run.state, batch)
  pictures = run.task.visualize(batch, jax.device_get(predictions))
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name, picture in pictures.items():
    path = os.path.join(out_dir, f"{split}_{name.replace('/', '_')}.png")
    Image.fromarray(np.asarray(picture)).save(path)
    paths.append(path)
  return paths
