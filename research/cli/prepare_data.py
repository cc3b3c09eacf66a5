"""Prepare datasets offline into a TFDS data_dir.

  research-prepare-data mnist --idx_dir DIR --data_dir ~/tensorflow_datasets
      MNIST from the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
      t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz).
  research-prepare-data voc2012_segmentation --voc_dir DIR --data_dir ~/tensorflow_datasets
      PASCAL VOC 2012 segmentation from DIR/VOCdevkit/VOC2012 (VOCtrainval_11-May-2012.tar
      extracted; with SegmentationClassAug/ in it, also the 10,582-image train_aug split).
  research-prepare-data digits|shapes [--data_dir DIR]
      Generate a built-in dataset now (it is otherwise generated on first use).
"""
from __future__ import annotations



from absl import app, flags

from research.cli.app import run_app
from research.data import datasets

_IDX_DIR = flags.DEFINE_string("idx_dir", None, "Directory holding MNIST's IDX files.")
_VOC_DIR = flags.DEFINE_string("voc_dir", None, "Directory holding VOCdevkit/VOC2012.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("name one dataset: mnist, voc2012_segmentation, or a built-in one ("
                         + ", ".join(datasets.BUILTIN) + ")")
  name = argv[1]
  data_dir = datasets.default_data_dir(_DATA_DIR.value)
  if name == "mnist":
    if not _IDX_DIR.value:
      raise app.UsageError("mnist needs --idx_dir, the directory with the four IDX .gz files")
    from research.data.mnist_idx import prepare_mnist
    builder = prepare_mnist(_IDX_DIR.value, data_dir)
  elif name == "voc2012_segmentation":
    if not _VOC_DIR.value:
      raise app.UsageError("voc2012_segmentation needs --voc_dir, the directory with VOCdevkit/VOC2012")
    from research.data.builders.voc_segmentation import prepare
    builder = prepare(_VOC_DIR.value, data_dir)
  elif datasets._base_name(name) in datasets.BUILTIN:
    builder = datasets.get_builder(name, data_dir)
  else:
    raise app.UsageError(f"don't know how to prepare {name!r} offline; use: tfds build {name} "
                         f"--data_dir {data_dir} --file_format=array_record")
  print(f"prepared {name} in {builder.data_dir}: "
        + ", ".join(f"{k} {v.num_examples}" for k, v in builder.info.splits.items()))


def run() -> None:
  """Console entry point."""
  run_app(main)


if __name__ == "__main__":
  run()
