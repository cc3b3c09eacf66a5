"""PyTorch reference of the default job: LeNet-5 on `digits` until 97% test accuracy.

  time python scripts/torch_lenet5_digits.py [--target 0.97] [--eval_every 10]

Same job as configs/lenet5_digits.py: the model of research/benchmarks/torch_reference.py
(research's LeNet5: 61,706 parameters) initialized as the config's "he_normal,lecun_normal"
(convolutions kaiming_normal_ fan_out, dense layers LeCun's truncated normal, biases zero), the
digits train/test split read through research.data.datasets, images (x / 255 - 0.306) / 0.325,
random crops with padding 2 (zeros before standardizing), batch 128 drawn from a new permutation
each epoch, SGD (momentum 0.9, coupled weight decay 5e-4 on all parameters, as torch.optim.SGD) at
learning rate 0.05 with cosine decay over 400 steps. PyTorch runs eager at its
defaults (threads = cores). The test split is scored every `--eval_every` steps; the script stops
at the first score >= `--target` and prints the step, the accuracy and the wall time since the
interpreter started (imports included, as `time` would measure it).
"""
from __future__ import annotations

import time

_START = time.time()  # before the heavy imports, so the printed wall time includes them

import argparse  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
try:
  import torch  # noqa: E402
except ImportError:
  raise SystemExit("error: this reference needs PyTorch, a test-only extra: "
                   ".venv/bin/pip install -e '.[dev]' (or pip install torch==2.14.1)")

from research.benchmarks.torch_reference import LeNet5  # noqa: E402
from research.configs.lenet5_digits import get_config  # noqa: E402
from research.data import datasets  # noqa: E402

_CONFIG = get_config()  # the job's numbers come from the shipped config, so the two cannot drift
NUM_STEPS, BATCH, LEARNING_RATE = _CONFIG.num_train_steps, _CONFIG.batch_size, _CONFIG.optimizer.learning_rate
PADDING, (MEAN,), (STD,) = _CONFIG.task.crop_padding, _CONFIG.task.mean, _CONFIG.task.std


def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
  """digits `split` -> (images float32 [N, 1, 28, 28] in [0, 1], labels int64 [N])."""
  source = datasets.get_data_source("digits", split)
  examples = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(e["image"]) for e in examples]).astype(np.float32) / 255.0
  labels = np.asarray([int(e["label"]) for e in examples], np.int64)
  return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


def random_crops(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
  """Pads [N, C, H, W] by PADDING with zeros and takes one random H x W crop per image."""
  n, _, h, w = images.shape
  padded = torch.nn.functional.pad(images, (PADDING,) * 4)
  dy, dx = torch.randint(0, 2 * PADDING + 1, (2, n), generator=generator)
  rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
  cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
  return padded[torch.arange(n)[:, None, None, None], torch.arange(images.shape[1])[None, :, None, None],
                rows, cols]


def init_as_config(model: torch.nn.Module) -> None:
  """The config's kernel_init "he_normal,lecun_normal" (research.models.initializers): conv
  weights N(0, 2 / fan_out); dense weights N(0, 1 / fan_in) truncated at 2 standard deviations
  and rescaled to keep that variance (jax's lecun_normal); biases zero (flax's default)."""
  for module in model.modules():
    if isinstance(module, torch.nn.Conv2d):
      torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, torch.nn.Linear):
      std = (1.0 / module.in_features) ** 0.5 / 0.87962566103423978
      torch.nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
    else:
      continue
    torch.nn.init.zeros_(module.bias)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--target", type=float, default=0.97)
  parser.add_argument("--eval_every", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  train_x, train_y = load_split("train")
  test_x, test_y = load_split("test")
  torch.manual_seed(args.seed)
  generator = torch.Generator().manual_seed(args.seed)
  model = LeNet5(num_classes=10, in_channels=1)
  init_as_config(model)
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9, weight_decay=5e-4)
  schedule = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, NUM_STEPS) / NUM_STEPS)))
  order, position, accuracy, step = torch.randperm(len(train_y), generator=generator), 0, 0.0, 0
  for step in range(1, NUM_STEPS + 1):
    if position + BATCH > len(order):
      order, position = torch.randperm(len(train_y), generator=generator), 0
    index = order[position:position + BATCH]
    position += BATCH
    model.train()
    images = (random_crops(train_x[index], generator) - MEAN) / STD
    loss = torch.nn.functional.cross_entropy(model(images), train_y[index])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    if step % args.eval_every == 0 or step == NUM_STEPS:
      model.eval()
      with torch.no_grad():
        accuracy = (model((test_x - MEAN) / STD).argmax(1) == test_y).float().mean().item()
      if accuracy >= args.target:
        break
  seconds = time.time() - _START
  reached = "reached" if accuracy >= args.target else "did NOT reach"
  print(f"pytorch LeNet-5 digits: {reached} {args.target:.0%} test accuracy ({accuracy:.4f}) at step {step}; "
        f"wall {seconds:.1f} s since interpreter start ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
  main()
