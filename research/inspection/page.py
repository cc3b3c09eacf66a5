"""research-inspect's output: PNG pictures, inspect.json, activations.npz and one self-contained
index.html (every picture embedded as base64, so the page is one file you can mail).

Files written to the output folder:
  input.png                   the input as the model sees it (after preprocessing, denormalized)
  activations/NN_<stage>.png  the first channels (up to 16) of each conv / pooling stage, each
                              channel scaled to its own [min, max], viridis
  weights.png                 bar charts: std and fraction near zero per parameter array
  relu.png                    bar chart: fraction of zeros per ReLU (when the model has ReLUs)
  first_conv.png              the first convolution's kernels (RGB when it reads 3 channels,
                              else the mean over inputs: red positive, blue negative)
  saliency.png, top_k.png     classifiers: the saliency map beside the input; the top-k bars
  activations.npz             every stage's activation of the input, float32 [H, W, C], by stage name
  inspect.json                the tables (weights, batch norm, relu, activations) and file names
  index.html                  all of it on one page
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
from typing import Any, Dict, List, Sequence

import numpy as np
from PIL import Image, ImageDraw

from research.inspection.predict import classification_picture
from research.viz.figures import new_figure, to_array

MAX_CHANNELS = 16


def _colormap(values: np.ndarray) -> np.ndarray:
  """float [...] in [0, 1] -> uint8 [..., 3] (viridis)."""
  from matplotlib import colormaps
  return (colormaps["viridis"](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def _scaled(channel: np.ndarray) -> np.ndarray:
  lo, hi = float(channel.min()), float(channel.max())
  return (channel - lo) / (hi - lo) if hi > lo else np.zeros_like(channel)


def tile(tiles: Sequence[np.ndarray], captions: Sequence[str], title: str, columns: int = 8,
         cell: int = 64) -> np.ndarray:
  """uint8 [H, W, 3]: RGB tiles [h, w, 3] upscaled (nearest) to about `cell` px, captioned, under a title."""
  n = len(tiles)
  columns = max(1, min(columns, n))
  rows = -(-n // columns)
  h, w = tiles[0].shape[:2]
  scale = max(1, cell // max(h, w))
  th, tw = h * scale, w * scale
  canvas = Image.new("RGB", (max(columns * (tw + 4), 240), 16 + rows * (th + 16)), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  draw.text((2, 2), title, fill=(0, 0, 0))
  for i, (t, caption) in enumerate(zip(tiles, captions)):
    r, c = divmod(i, columns)
    x, y = c * (tw + 4), 16 + r * (th + 16)
    canvas.paste(Image.fromarray(t).resize((tw, th), Image.NEAREST), (x, y))
    draw.text((x, y + th + 2), caption, fill=(60, 60, 60))
  return np.asarray(canvas)


def activation_picture(name: str, activation: np.ndarray) -> np.ndarray:
  """The first channels of one stage's activation [H, W, C] as a captioned grid."""
  c = activation.shape[-1]
  shown = min(c, MAX_CHANNELS)
  tiles = [_colormap(_scaled(activation[..., k])) for k in range(shown)]
  title = f"{name}  {'x'.join(map(str, activation.shape))}" + (f" (first {shown} of {c} channels)" if shown < c else "")
  return tile(tiles, [f"ch {k}" for k in range(shown)], title)


def kernel_picture(name: str, kernel: np.ndarray) -> np.ndarray:
  """Kernels [kh, kw, C_in, C_out] as tiles: RGB when C_in == 3, else the mean over inputs
  (blue negative, red positive), each tile scaled by the layer's largest |weight|."""
  top = float(np.abs(kernel).max()) or 1.0
  tiles = []
  for o in range(min(kernel.shape[-1], 64)):
    k = kernel[..., o]
    if k.shape[-1] == 3:
      tiles.append(((k / top + 1) * 127.5).clip(0, 255).astype(np.uint8))
    else:
      v = k.mean(axis=-1) / top  # diverging: white 0, red positive, blue negative
      rgb = np.stack([1 - np.clip(-v, 0, 1), 1 - np.abs(v), 1 - np.clip(v, 0, 1)], -1)
      tiles.append((rgb * 255).clip(0, 255).astype(np.uint8))
  return tile(tiles, [str(o) for o in range(len(tiles))],
              f"first convolution {name}: kernel {'x'.join(map(str, kernel.shape))}", columns=16, cell=40)


def bar_chart(names: Sequence[str], series: Dict[str, Sequence[float]], title: str) -> np.ndarray:
  """One horizontal bar chart per series, names down the side."""
  n = len(names)
  fig = new_figure((4.2 * len(series) + 2.5, 1.0 + 0.18 * n))
  for i, (label, values) in enumerate(series.items()):
    ax = fig.add_subplot(1, len(series), i + 1)
    ax.barh(range(n), values, color="#2a7ab9")
    ax.set_yticks(range(n), labels=list(names) if i == 0 else [""] * n, fontsize=6)
    ax.invert_yaxis()
    ax.set_title(label, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
  fig.suptitle(title, fontsize=10)
  return to_array(fig)


def saliency_picture(image: np.ndarray, saliency: np.ndarray, title: str) -> np.ndarray:
  fig = new_figure((6.0, 3.0))
  for i, (shown, label) in enumerate(((image, "input"), (saliency, title))):
    ax = fig.add_subplot(1, 2, i + 1)
    if shown.ndim == 3 and shown.shape[-1] == 1:
      shown = shown[..., 0]
    ax.imshow(shown, cmap="gray" if i == 0 and shown.ndim == 2 else ("inferno" if i else None),
              interpolation="nearest")
    ax.set_title(label, fontsize=8)
    ax.axis("off")
  return to_array(fig)


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _save(path: str, picture: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(picture, np.uint8)).save(path)


def write(result: Dict[str, Any], input_image: np.ndarray, out_dir: str, about: Dict[str, Any]) -> Dict[str, Any]:
  """Writes the files of the module docstring; returns the JSON record (also inspect.json).

  result: research.inspection.inspector.inspect's output; input_image: uint8 [H, W, 3] the model's
  input; about: what was inspected ({'workdir', 'task', 'model', 'input'}).
  """
  os.makedirs(out_dir, exist_ok=True)
  shutil.rmtree(os.path.join(out_dir, "activations"), ignore_errors=True)  # a previous input's stages
  pictures: List[Dict[str, str]] = []  # {'file', 'section', 'caption'} in page order

  def save(name: str, picture: np.ndarray, section: str, caption: str) -> str:
    _save(os.path.join(out_dir, name), picture)
    pictures.append({"file": name, "section": section, "caption": caption})
    return name

  save("input.png", np.asarray(Image.fromarray(input_image).resize(
      (input_image.shape[1] * max(1, 128 // input_image.shape[1]), input_image.shape[0] * max(1, 128 // input_image.shape[0])),
      Image.NEAREST)), "input", "the input after preprocessing")
  if "top_k" in result:
    save("top_k.png", classification_picture(input_image, result["top_k"], "top-k"), "prediction", "top-k classes")
    top = result["top_k"][0]
    save("saliency.png", saliency_picture(input_image, result["saliency"], f"saliency of '{top['name']}'"),
         "prediction", f"|d logit({top['name']}) / d input|, max over channels")
  stages = []
  for i, (name, a) in enumerate(result["activations"]):
    file = save(f"activations/{i:02d}_{_slug(name)}.png", activation_picture(name, a), "activations", name)
    stages.append({"name": name, "shape": list(a.shape), "mean": float(a.mean()), "std": float(a.std()),
                   "zero_fraction": float(np.mean(a == 0)), "picture": file})
  np.savez_compressed(os.path.join(out_dir, "activations.npz"), **{n: a for n, a in result["activations"]})
  weights = result["weights"]
  if weights:
    save("weights.png", bar_chart([w["name"] for w in weights], {
        "std": [w["std"] for w in weights], "fraction near zero": [w["near_zero"] for w in weights],
        "L2 norm": [w["l2"] for w in weights]}, "weights per parameter array"), "weights", "weight statistics")
  if result["relu"]:
    save("relu.png", bar_chart([r["name"] for r in result["relu"]],
                               {"fraction of zeros": [r["zero_fraction"] for r in result["relu"]]},
                               "ReLU outputs that are zero on this input"), "relu", "ReLU zeros")
  first_conv = None
  if result["first_conv"] is not None:
    name, kernel = result["first_conv"]
    first_conv = {"name": name, "shape": list(kernel.shape)}
    save("first_conv.png", kernel_picture(name, kernel), "first_conv", f"kernels of {name}")
  record = {**about, "top_k": result.get("top_k"), "activations": stages, "weights": weights,
            "batch_norm": result["batch_norm"], "relu": result["relu"], "first_conv": first_conv,
            "pictures": pictures, "files": ["index.html", "inspect.json", "activations.npz"] +
            [p["file"] for p in pictures]}
  with open(os.path.join(out_dir, "inspect.json"), "w") as f:
    json.dump(record, f, indent=1)
  with open(os.path.join(out_dir, "index.html"), "w") as f:
    f.write(render_html(record, out_dir))
  return record


def _img(out_dir: str, file: str, caption: str) -> str:
  with open(os.path.join(out_dir, file), "rb") as f:
    data = base64.b64encode(f.read()).decode()
  return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
          f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(rows: Sequence[Dict[str, Any]], columns: Sequence[str]) -> str:
  def cell(v: Any) -> str:
    if isinstance(v, float):
      return f"{v:.4g}"
    if isinstance(v, list):
      return "x".join(map(str, v))
    return html.escape(str(v))
  head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
  body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def render_html(record: Dict[str, Any], out_dir: str) -> str:
  """One self-contained page: pictures as base64 data URIs, tables inline."""
  by_section: Dict[str, List[str]] = {}
  for p in record["pictures"]:
    by_section.setdefault(p["section"], []).append(_img(out_dir, p["file"], p["caption"]))
  parts = [f"<h1>{html.escape(str(record.get('model', '')))} &mdash; {html.escape(str(record.get('task', '')))}</h1>",
           f"<p>run <code>{html.escape(str(record.get('workdir', '')))}</code>, step {record.get('step', '?')}; "
           f"input: {html.escape(str(record.get('input', '')))}</p>",
           "<div class=row>" + "".join(by_section.get("input", []) + by_section.get("prediction", [])) + "</div>"]
  if record.get("top_k"):
    parts += ["<h2>Prediction</h2>", _table(record["top_k"], ["class", "name", "probability"])]
  parts += ["<h2>Activations</h2>",
            _table(record["activations"], ["name", "shape", "mean", "std", "zero_fraction"]),
            "".join(by_section.get("activations", []))]
  parts += ["<h2>Weights</h2>", "".join(by_section.get("weights", [])),
            _table(record["weights"], ["name", "shape", "count", "mean", "std", "min", "max", "near_zero", "l2"])]
  if record["batch_norm"]:
    parts += ["<h2>BatchNorm running statistics</h2>",
              _table(record["batch_norm"], ["name", "channels", "mean_of_mean", "mean_abs_mean", "mean_of_var",
                                            "min_var", "max_var"])]
  if record["relu"]:
    parts += ["<h2>ReLU zeros on this input</h2>", "".join(by_section.get("relu", [])),
              _table(record["relu"], ["name", "shape", "zero_fraction"])]
  if by_section.get("first_conv"):
    parts += ["<h2>First convolution</h2>", "".join(by_section["first_conv"])]
  style = ("body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;font-size:12px;"
           "margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child{text-align:left}"
           "figure{display:inline-block;margin:4px;vertical-align:top}figcaption{font-size:11px;color:#555}"
           "img{max-width:100%;image-rendering:pixelated}.row figure{margin-right:1em}")
  return (f"<!DOCTYPE html><html><head><meta charset=utf-8><title>inspect {html.escape(str(record.get('model', '')))}"
          f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
