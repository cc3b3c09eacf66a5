"""Benchmark (not a test) of `prepare_data imagenet2012`: throughput and peak memory.

  python scripts/bench_prepare.py [--num_images 20000] [--num_workers N] [--workdir DIR]

Generates an ImageNet-layout source of about --num_images JPEGs of about 400x350 (90% in
ILSVRC2012_img_train.tar, a tar of 100 class tars; 10% in ILSVRC2012_img_val.tar), prepares it
in a subprocess, and prints images/s and the peak resident memory of the preparing processes
(sampled every 0.1 s: the largest sum over the main process and its workers, and the largest one).
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np
import psutil
from PIL import Image



def _jpegs(count: int, rng: np.random.Generator) -> list[bytes]:
  """`count` distinct JPEGs of 400x350 (smooth gradients with noise, ~60 KB at quality 90)."""
  out = []
  y, x = np.mgrid[0:350, 0:400]
  for _ in range(count):
    base = np.stack([np.sin(x / rng.uniform(10, 60) + rng.uniform(0, 6)) * 100 + 128 for _ in range(3)], -1)
    image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    out.append(buffer.getvalue())
  return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def make_source(path: str, num_images: int, num_classes: int = 100) -> int:
  """Writes the two tars into `path`; returns their total size in bytes."""
  import tensorflow_datasets as tfds
  rng = np.random.default_rng(0)
  pool = _jpegs(64, rng)
  synsets = tfds.builder_cls("imagenet2012")().info.features["label"].names[:num_classes]
  num_val = num_images // 10
  per_class = (num_images - num_val) // num_classes
  with tarfile.open(os.path.join(path, "ILSVRC2012_img_train.tar"), "w") as outer:
    for c, synset in enumerate(synsets):
      buffer = io.BytesIO()
      with tarfile.open(fileobj=buffer, mode="w") as inner:
        for k in range(per_class):
          _add(inner, f"{synset}_{k}.JPEG", pool[(c * per_class + k) % len(pool)])
      _add(outer, f"{synset}.tar", buffer.getvalue())
  with tarfile.open(os.path.join(path, "ILSVRC2012_img_val.tar"), "w") as val:
    for k in range(num_val):
      _add(val, f"ILSVRC2012_val_{k + 1:08d}.JPEG", pool[k % len(pool)])
  return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--num_images", type=int, default=20000)
  p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
  p.add_argument("--workdir", default=None, help="where to write the source and the dataset (default: a temp dir)")
  args = p.parse_args()
  workdir = args.workdir or tempfile.mkdtemp(prefix="bench_prepare_")
  source, data_dir = os.path.join(workdir, "source"), os.path.join(workdir, "data")
  shutil.rmtree(data_dir, ignore_errors=True)
  os.makedirs(source, exist_ok=True)
  start = time.time()
  size = make_source(source, args.num_images)
  print(f"source: {size / 1e9:.2f} GB in {time.time() - start:.0f} s ({source})")
  command = [sys.executable, "-m", "research.cli.prepare_data", "imagenet2012", "--source", source,
             "--data_dir", data_dir, "--num_workers", str(args.num_workers), "--skip_checksums"]
  start = time.time()
  proc = subprocess.Popen(command,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  main_proc = psutil.Process(proc.pid)
  peak_total = peak_one = 0
  while proc.poll() is None:
    try:
      procs = [main_proc] + main_proc.children(recursive=True)
      rss = [q.memory_info().rss for q in procs]
      peak_total, peak_one = max(peak_total, sum(rss)), max(peak_one, max(rss))
    except psutil.Error:
      pass
    time.sleep(0.1)
  elapsed = time.time() - start
  output = proc.stdout.read()
  if proc.returncode:
    sys.exit(f"preparation failed:\n{output}")
  prepared = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(data_dir) for f in fs)
  total = (args.num_images - args.num_images // 10) // 100 * 100 + args.num_images // 10
  print(output.strip().splitlines()[-1])
  print(f"{total:,} images in {elapsed:.1f} s (process start included): {total / elapsed:,.0f} images/s "
        f"with {args.num_workers} workers; peak RSS {peak_total / 2**20:,.0f} MiB over all processes, "
        f"{peak_one / 2**20:,.0f} MiB the largest one; output {prepared / 1e9:.2f} GB "
        f"({prepared / size:.3f} x the source)")
  if not args.workdir:
    shutil.rmtree(workdir)


if __name__ == "__main__":
  main()
