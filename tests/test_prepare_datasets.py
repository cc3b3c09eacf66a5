"""Every real dataset prepared offline from a tiny source in its publisher's layout (archives, and
extracted folders), read back through research.data.datasets: every feature of every example
equals the source's, and the feature spec is TFDS's builder's. No TensorFlow."""
import importlib.util
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from research.data import datasets
from research.data.prepare import cli, common, sources
from tests import prepare_sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["mnist", "cifar10", "cifar100", "imagenet2012", "coco/2017", "coco_captions", "voc/2007",
         "voc/2012", "voc2012_segmentation", "celeb_a"]


def test_tensorflow_is_not_importable():
  assert importlib.util.find_spec("tensorflow") is None
  assert "tensorflow" not in sys.modules


@pytest.fixture(autouse=True)
def _tiny_archives_pass_the_size_checks(monkeypatch):
  """The tiny archives are not the publisher's sizes; the checks themselves are tested in
  test_prepare_errors.py."""
  monkeypatch.setattr(sources, "PUBLISHED", {})


def _compare(got, expected, where: str) -> None:
  """`got` (decoded by TFDS) equals `expected`, recursively; floats to float32 precision."""
  if isinstance(expected, dict):
    assert set(got) == set(expected), (where, sorted(got), sorted(expected))
    for k in expected:
      _compare(got[k], expected[k], f"{where}/{k}")
    return
  if isinstance(expected, str):
    assert got == expected.encode(), (where, got, expected)
    return
  expected = np.asarray(expected)
  got = np.asarray(got)
  if expected.dtype.kind == "U":
    expected = np.char.encode(expected)
    got = got.astype(bytes)
  if got.size == expected.size == 0:  # (TFDS decodes an empty sequence of boxes as shape [0])
    return
  if expected.dtype.kind == "f":
    assert got.shape == expected.shape, (where, got.shape, expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=where)
  else:
    assert got.shape == expected.shape, (where, got.shape, expected.shape)
    np.testing.assert_array_equal(got, expected, err_msg=where)


def check_prepared(case: prepare_sources.Case, data_dir: str) -> None:
  """Every example of every split of `case` read back exactly, and TFDS's feature spec."""
  builder = datasets.get_builder(case.name, data_dir)
  assert set(builder.info.splits) == set(case.expected)
  for split, examples in case.expected.items():
    source = datasets.get_data_source(case.name, split, data_dir)
    assert len(source) == len(examples), split
    got = [source[i] for i in range(len(source))]
    if case.key:
      got = {ex[case.key].decode() if isinstance(ex[case.key], bytes) else ex[case.key]: ex for ex in got}
      assert set(got) == set(examples), split
      pairs = [(got[k], examples[k]) for k in examples]
    else:  # kept in source order
      pairs = list(zip(got, examples.values()))
    for ours, theirs in pairs:
      _compare(ours, theirs, f"{case.name}/{split}")
  base, _, config = case.name.partition("/")
  if base in ("coco", "coco_captions"):  # (TFDS's coco code names tf.int64: see common.catalog_builder)
    reference_builder = common.catalog_builder(case.name, data_dir + "_spec")
  else:
    reference_builder = tfds.builder_cls(base)(data_dir=data_dir + "_spec", **({"config": config} if config else {}))
  reference = reference_builder.info.features
  assert builder.info.features.to_json() == reference.to_json()
  assert builder.info.features.get_serialized_info() == reference.get_serialized_info()
  for path, names in case.names.items():
    feature = builder.info.features
    for part in path.split("/"):
      feature = feature[part]
    feature = getattr(feature, "feature", feature)
    assert feature.names == list(names), path
  assert builder.version == reference_builder.version and builder.name == reference_builder.name


@pytest.mark.parametrize("extracted", [False, True], ids=["archives", "extracted"])
@pytest.mark.parametrize("name", NAMES)
def test_prepare_reads_back_every_feature(name, extracted, tmp_path):
  case = prepare_sources.case(name, extracted)
  source = prepare_sources.write(case, str(tmp_path / "source"), extracted)
  data_dir = str(tmp_path / "data")
  assert cli.run([name, "--source", source, "--data_dir", data_dir, "--num_workers", "1"]) == 0
  check_prepared(case, data_dir)
  assert not [p for p in os.listdir(os.path.dirname(datasets.get_builder(name, data_dir).data_dir))
              if p.endswith(".incomplete")]


def test_command_line_with_workers_and_max_examples(tmp_path):
  """research-prepare-data in a subprocess, 2 worker processes, the old --idx_dir name, a subset."""
  case = prepare_sources.case("cifar10")
  source = prepare_sources.write(case, str(tmp_path / "source"), extracted=True)
  data_dir = str(tmp_path / "data")
  out = subprocess.run([sys.executable, "-m", "research.cli.prepare_data", "cifar10",
                        "--idx_dir", source, "--data_dir", data_dir, "--num_workers", "2",
                        "--max_examples", "7"], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "cifar10: 6/6 shards" in out.stderr
  train = datasets.get_data_source("cifar10", "train", data_dir)
  assert len(train) == 7 and len(datasets.get_data_source("cifar10", "test", data_dir)) == 2
  # 7 spread over the 5 batches: 2, 2, 1, 1, 1 first examples of each
  assert [train[i]["id"] for i in range(7)] == [b"train_00000", b"train_00001", b"train_00002", b"train_00003",
                                                b"train_00004", b"train_00006", b"train_00008"]


def test_jpegs_kept_as_bytes_unless_the_reader_cannot_decode_them_to_rgb():
  """RGB and greyscale JPEGs are stored as their bytes; CMYK JPEGs and PNGs (a few ImageNet files)
  become RGB JPEGs of the same picture, as TFDS's imagenet2012 builder makes them."""
  rng = np.random.default_rng(0)
  for grey in (False, True):
    data, _ = prepare_sources.jpeg(rng, 20, 30, grey=grey)
    assert common.image_bytes(data, "x") is data
  picture = np.zeros((20, 30, 3), np.uint8)
  picture[:, :15] = (200, 30, 90)
  for mode, fmt in (("CMYK", "JPEG"), ("RGB", "PNG")):
    buffer = io.BytesIO()
    Image.fromarray(picture).convert(mode).save(buffer, format=fmt, quality=100)
    with Image.open(io.BytesIO(common.image_bytes(buffer.getvalue(), "x"))) as out:
      assert out.format == "JPEG" and out.mode == "RGB"
      assert np.abs(np.asarray(out, np.int32) - picture).mean() < 4, mode
  with pytest.raises(sources.SourceError, match="x.jpg is not a readable image"):
    common.image_bytes(b"<html>not found</html>", "x.jpg")
