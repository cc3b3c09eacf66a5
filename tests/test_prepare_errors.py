"""A wrong, incomplete or missing source is one error naming the file and what was expected; a
failed preparation leaves nothing that looks prepared, and a rerun resumes its finished shards."""
import hashlib
import os
import shutil
import tarfile

import pytest

from research.data import datasets
from research.data.prepare import cifar, cli, sources
from tests import prepare_sources


def _source(tmp_path, name: str, extracted: bool = False) -> str:
  return prepare_sources.write(prepare_sources.case(name, extracted), str(tmp_path / "source"), extracted)


def _run(tmp_path, name: str, source: str, capsys) -> str:
  """The command's error message (exit status 2, no traceback)."""
  status = cli.run([name, "--source", source, "--data_dir", str(tmp_path / "data"), "--num_workers", "1"])
  err = capsys.readouterr().err
  assert status == 2 and "Traceback" not in err, err
  return err


def test_missing_archive_names_it(tmp_path, capsys):
  os.makedirs(tmp_path / "empty")
  err = _run(tmp_path, "cifar10", str(tmp_path / "empty"), capsys)
  assert "cifar-10-python.tar.gz not found in" in err and "cifar-10-batches-py/batches.meta" in err
  err = _run(tmp_path, "celeb_a", str(tmp_path / "empty"), capsys)
  assert "list_eval_partition.txt not found" in err


def test_size_and_md5_must_be_the_publishers(tmp_path, capsys, monkeypatch):
  source = _source(tmp_path, "cifar10")
  path = os.path.join(source, "cifar-10-python.tar.gz")
  size = os.path.getsize(path)
  monkeypatch.setattr(sources, "PUBLISHED", {"cifar-10-python.tar.gz": (size + 1, None)})
  err = _run(tmp_path, "cifar10", source, capsys)
  assert f"{path} has {size:,} bytes, but the publisher's cifar-10-python.tar.gz has {size + 1:,}" in err
  monkeypatch.setattr(sources, "PUBLISHED", {"cifar-10-python.tar.gz": (size, "0" * 32)})
  err = _run(tmp_path, "cifar10", source, capsys)
  with open(path, "rb") as f:
    assert f"has md5 {hashlib.md5(f.read()).hexdigest()}, but the publisher's" in err
  assert cli.run(["cifar10", "--source", source, "--data_dir", str(tmp_path / "data"), "--skip_checksums"]) == 0


def _truncate(path: str, size: int = 0) -> None:
  with open(path, "r+b") as f:
    f.truncate(size or os.path.getsize(path) // 2)


def _member_end(path: str, index: int) -> int:
  """The byte where member `index` of an uncompressed tar ends."""
  with tarfile.open(path) as tar:
    member = tar.getmembers()[index]
  return member.offset_data + member.size


def test_truncated_archives(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(sources, "PUBLISHED", {})
  source = _source(tmp_path, "voc/2007")
  path = os.path.join(source, "VOCtest_06-Nov-2007.tar")
  _truncate(path, _member_end(path, -1) - 10)  # cut inside the last file
  err = _run(tmp_path, "voc/2007", source, capsys)
  assert f"{path} is truncated: member" in err
  path = os.path.join(source, "VOCtrainval_06-Nov-2007.tar")
  _truncate(path, _member_end(path, 2) + 511 & ~511)  # cut between two members
  err = _run(tmp_path, "voc/2007", source, capsys)
  assert f"{path} is truncated: it stops after 3 members" in err
  coco = str(tmp_path / "coco")
  prepare_sources.write(prepare_sources.case("coco/2017"), coco, extracted=False)
  _truncate(os.path.join(coco, "val2017.zip"))
  err = _run(tmp_path, "coco/2017", coco, capsys)
  assert "val2017.zip is not a complete zip archive" in err
  mnist = str(tmp_path / "mnist")
  prepare_sources.write(prepare_sources.case("mnist"), mnist, extracted=False)
  _truncate(os.path.join(mnist, "t10k-images-idx3-ubyte.gz"))
  err = _run(tmp_path, "mnist", mnist, capsys)
  assert "t10k-images-idx3-ubyte.gz cannot be read" in err


def test_wrong_file(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(sources, "PUBLISHED", {})
  source = str(tmp_path / "source")
  os.makedirs(source)
  with open(os.path.join(source, "cifar-10-python.tar.gz"), "wb") as f:  # CIFAR-100's, renamed
    f.write(prepare_sources.tar_bytes(prepare_sources.case("cifar100").archives["cifar-100-python.tar.gz"], gz=True))
  err = _run(tmp_path, "cifar10", source, capsys)
  assert "cifar-10-python.tar.gz has no cifar-10-batches-py/batches.meta" in err
  imagenet = _source(tmp_path / "in", "imagenet2012", extracted=True)
  os.rename(os.path.join(imagenet, "ILSVRC2012_img_val", "ILSVRC2012_val_00000002.JPEG"),
            os.path.join(imagenet, "ILSVRC2012_img_val", "val_2.JPEG"))
  err = _run(tmp_path, "imagenet2012", imagenet, capsys)
  assert "unexpected member val_2.JPEG" in err


def test_failed_preparation_looks_unprepared_and_rerun_resumes(tmp_path, capsys, monkeypatch):
  source = _source(tmp_path, "cifar10", extracted=True)
  data_dir = str(tmp_path / "data")
  real = cifar.generate

  def fail_on_test(args):
    if args[3] == "test":
      raise RuntimeError("killed")
    return real(args)

  monkeypatch.setattr(cifar, "generate", fail_on_test)
  with pytest.raises(RuntimeError, match="killed"):
    cli.prepare("cifar10", source, data_dir)
  with pytest.raises(datasets.DatasetNotPreparedError):
    datasets.get_builder("cifar10", data_dir)
  monkeypatch.setattr(cifar, "generate", real)
  capsys.readouterr()
  cli.prepare("cifar10", source, data_dir)
  assert "resuming: 5 of 6 shards were finished before" in capsys.readouterr().err
  assert len(datasets.get_data_source("cifar10", "train", data_dir)) == 10


def test_not_prepared_message_gives_both_commands(tmp_path):
  with pytest.raises(datasets.DatasetNotPreparedError) as e:
    datasets.get_data_source("coco/2017", "train", str(tmp_path))
  message = str(e.value)
  assert f"research-prepare-data coco/2017 --source DIR --data_dir {tmp_path}" in message
  assert "train2017.zip, val2017.zip, annotations_trainval2017.zip" in message
  assert "pip install tensorflow-cpu" in message and f"tfds build coco/2017 --data_dir {tmp_path}" in message


def test_free_disk_is_checked_before_writing(tmp_path, capsys, monkeypatch):
  source = _source(tmp_path, "voc/2007", extracted=True)
  free = shutil.disk_usage(str(tmp_path)).__class__(total=10**9, used=10**9 - 1000, free=1000)
  monkeypatch.setattr(shutil, "disk_usage", lambda path: free)
  err = _run(tmp_path, "voc/2007", source, capsys)
  assert "not enough free disk in" in err and "1.0 KB is free" in err
  assert not os.path.exists(tmp_path / "data" / "voc" / "2007" / "5.0.0")
