"""import_weights: a torchvision checkpoint -> a run folder that evaluate and init_from read.

    research-import-weights --arch resnet50 --weights resnet50-0676ba61.pth --out runs/resnet50_tv
    research-evaluate --workdir runs/resnet50_tv        # top-1 on a prepared imagenet2012
    research-train --config faster_rcnn_r50_fpn_coco --workdir W --config.init_from.workdir=runs/resnet50_tv

--weights is a state_dict saved with torch.save (.pth, .pt) or with safetensors (.safetensors), of
torchvision's resnet18/34/50/101/152, vgg11/13/16/19 (and _bn), alexnet or googlenet, any number of
classes. The folder's config (research/weights/workdir.py) evaluates on imagenet2012's validation
split (--data_dir, else $TFDS_DATA_DIR) with torchvision's preprocessing. GoogLeNet's published
weights expect torchvision's transform_input, which is the default for googlenet
(--no-transform_input for weights trained without it). torch is imported only to read a .pth file.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from research.core.state import count_params
from research.weights.convert import ARCHITECTURES, WeightsError, convert
from research.weights.files import read_state_dict
from research.weights.workdir import check_new_folder, imagenet_config, write_workdir


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="research-import-weights", description=__doc__.split("\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--arch", required=True, choices=ARCHITECTURES, help="the torchvision model")
  parser.add_argument("--weights", required=True, metavar="FILE", help="its state_dict (.pth, .pt, .safetensors)")
  parser.add_argument("--out", required=True, metavar="DIR", help="the run folder to write (new or empty)")
  parser.add_argument("--data_dir", default="", help="TFDS data_dir of imagenet2012 (default: $TFDS_DATA_DIR)")
  parser.add_argument("--eval_resize", type=int, default=256,
                      help="shorter side before the 224 centre crop (torchvision's IMAGENET1K_V2 ResNet-50: 232)")
  parser.add_argument("--transform_input", action=argparse.BooleanOptionalAction, default=None,
                      help="googlenet: inputs normalized as torchvision's transform_input does (default on)")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command on `argv` (default sys.argv[1:]); returns the exit status."""
  args = _parser().parse_args(argv)
  try:
    if args.transform_input is not None and args.arch != "googlenet":
      raise WeightsError("--transform_input is GoogLeNet's option (torchvision's transform_input)")
    if args.eval_resize < 224:
      raise WeightsError(f"--eval_resize={args.eval_resize}: the shorter side must be at least the 224 crop")
    check_new_folder(args.out)
    variables, kwargs = convert(args.arch, read_state_dict(args.weights))
    transform_input = args.arch == "googlenet" and args.transform_input is not False
    config = imagenet_config(args.arch, kwargs, transform_input, args.data_dir, args.eval_resize)
    out = write_workdir(args.out, config, variables)
  except WeightsError as e:
    print(f"research-import-weights: error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {out}: {args.arch}, {count_params(variables['params']):,} parameters, "
        f"{kwargs['num_classes']} classes")
  print(f"  evaluate:  research-evaluate --workdir {out}   (imagenet2012 validation, resize "
        f"{args.eval_resize}, centre crop 224)")
  print(f"  fine-tune: --config.init_from.workdir={out}")
  return 0


def run(argv: Optional[Sequence[str]] = None) -> None:
  """Console entry point."""
  sys.exit(main(argv))


if __name__ == "__main__":
  run()
