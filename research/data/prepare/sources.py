"""The publishers' files, as downloaded archives or already extracted, behind one interface.

A source file is named by its publisher's archive name (`cifar-10-python.tar.gz`, `train2017.zip`,
`ILSVRC2012_img_val.tar`). `find` returns an `Archive` for it: the archive itself (tar, tar.gz,
zip) when `PATH/<archive name>` exists, else the folder it was extracted into. Member names are
always the archive's ('cifar-10-batches-py/data_batch_1', 'train2017/000000000009.jpg'), so the
dataset modules never know which form they read.

Archives are picklable (open handles are per process), so worker processes open them again and
read their members by random access: zip through its central directory, an uncompressed tar
through an index of member offsets built once. A missing file, a truncated or corrupt archive, a
member that is not where the publisher puts it, or a size or md5 that differs from the published
one raise `SourceError`, whose message names the file and what was expected.
"""
from __future__ import annotations

import abc
import hashlib
import io
import os
import tarfile
import zipfile
import zlib
from typing import BinaryIO, Iterator, Optional


class SourceError(ValueError):
  """A missing, incomplete or wrong source file; the message names it and what was expected."""


# Sizes in bytes (and md5 where the publisher publishes one) of the publishers' archives: CIFAR's
# md5 from its page, ImageNet's sizes from image-net.org, the others as recorded by TFDS's
# checksums for the publishers' URLs. Checked before anything is read (`verify`), unless
# the user passes --skip_checksums (a re-packed copy). MNIST's IDX files and CelebA's list files
# are checked by their contents instead (the IDX header's dimensions, the list's image count), so
# a gunzipped or re-gzipped MNIST, or a list file with other line endings, still works.
PUBLISHED: dict[str, tuple[int, Optional[str]]] = {
    "cifar-10-python.tar.gz": (170498071, "c58f30108f718f92721af3b95e74349a"),
    "cifar-100-python.tar.gz": (169001437, "eb9058c3a382ffc7106e4002c42a8d85"),
    "ILSVRC2012_img_train.tar": (147897477120, None),
    "ILSVRC2012_img_val.tar": (6744924160, None),
    "train2017.zip": (19336861798, None),
    "val2017.zip": (815585330, None),
    "test2017.zip": (6646970404, None),
    "annotations_trainval2017.zip": (252907541, None),
    "image_info_test2017.zip": (1144034, None),
    "train2014.zip": (13510573713, None),
    "val2014.zip": (6645013297, None),
    "annotations_trainval2014.zip": (252872794, None),
    "VOCtrainval_06-Nov-2007.tar": (460032000, None),
    "VOCtest_06-Nov-2007.tar": (451020800, None),
    "VOCtrainval_11-May-2012.tar": (1999639040, None),
    "img_align_celeba.zip": (1443490838, None),
}


def verify(path: str) -> None:
  """Checks `path` against its published size (and md5); SourceError naming both if it differs."""
  name = os.path.basename(path)
  if name not in PUBLISHED:
    return
  size, md5 = PUBLISHED[name]
  actual = os.path.getsize(path)
  if actual != size:
    raise SourceError(f"{path} has {actual:,} bytes, but the publisher's {name} has {size:,}: the "
                      "file is incomplete or not the publisher's (download it again; pass "
                      "--skip_checksums to accept a re-packed copy)")
  if md5:
    digest = hashlib.md5()
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 22), b""):
        digest.update(block)
    if digest.hexdigest() != md5:
      raise SourceError(f"{path} has md5 {digest.hexdigest()}, but the publisher's {name} has {md5}: "
                        "the file is corrupt (download it again)")


class Archive(abc.ABC):
  """Read-only members of one source file, by their names inside the publisher's archive."""

  path: str

  def __repr__(self) -> str:  # (stable across runs: a plan's fingerprint includes it)
    return f"{type(self).__name__}({self.path!r})"

  @abc.abstractmethod
  def names(self) -> list[str]:
    """Every member file name, '/'-separated, in archive order."""

  @abc.abstractmethod
  def open(self, name: str) -> BinaryIO:
    """A binary file object for member `name`; SourceError if the source has none."""

  @abc.abstractmethod
  def size(self, name: str) -> int:
    """The size in bytes of member `name` (as the archive's index records it)."""

  def read(self, name: str) -> bytes:
    with self.open(name) as f:
      data = f.read()
    if len(data) != self.size(name):
      raise SourceError(f"{self.path}: member {name} is truncated ({len(data):,} of "
                        f"{self.size(name):,} bytes)")
    return data

  @abc.abstractmethod
  def __contains__(self, name: str) -> bool:
    """Whether the source has member `name`."""

  def missing(self, name: str) -> SourceError:
    return SourceError(f"{self.path} has no {name}, where the publisher's file has it: wrong or "
                       "incomplete file")


class FolderArchive(Archive):
  """An archive extracted into the folder `path` (member 'a/b' is the file path/a/b)."""

  def __init__(self, path: str):
    self.path = path

  def names(self) -> list[str]:
    out = []
    for parent, dirs, files in os.walk(self.path):
      dirs.sort()
      rel = os.path.relpath(parent, self.path)
      out += [f if rel == "." else f"{rel}/{f}".replace(os.sep, "/") for f in sorted(files)]
    return out

  def _file(self, name: str) -> str:
    return os.path.join(self.path, *name.split("/"))

  def __contains__(self, name: str) -> bool:
    return os.path.isfile(self._file(name))

  def open(self, name: str) -> BinaryIO:
    if name not in self:
      raise SourceError(f"{self._file(name)} not found (the extracted folder {self.path} lacks it)")
    return open(self._file(name), "rb")

  def size(self, name: str) -> int:
    return os.path.getsize(self._file(name))


# Open zip files of this process: (path, pid) -> (ZipFile, {member: ZipInfo}). A ZipArchive pickles
# as its path alone (COCO's train2017.zip lists 118,287 members), and each process reads the
# central directory once.
_ZIPS: dict[tuple[str, int], tuple[zipfile.ZipFile, dict]] = {}


class ZipArchive(Archive):
  """A zip file, read through its central directory (random access)."""

  def __init__(self, path: str):
    self.path = path
    self._zip()  # (checks the file now, in the process that plans)

  def _zip(self) -> tuple[zipfile.ZipFile, dict]:
    key = (self.path, os.getpid())
    if key not in _ZIPS:
      try:
        handle = zipfile.ZipFile(self.path)
      except (zipfile.BadZipFile, OSError) as e:
        raise SourceError(f"{self.path} is not a complete zip archive ({e}): the download is "
                          "truncated or it is another file (download it again)") from None
      _ZIPS[key] = handle, {i.filename: i for i in handle.infolist() if not i.is_dir()}
    return _ZIPS[key]

  def names(self) -> list[str]:
    return list(self._zip()[1])

  def __contains__(self, name: str) -> bool:
    return name in self._zip()[1]

  def size(self, name: str) -> int:
    return self._zip()[1][name].file_size

  def open(self, name: str) -> BinaryIO:
    handle, infos = self._zip()
    if name not in infos:
      raise self.missing(name)
    return handle.open(infos[name])

  def read(self, name: str) -> bytes:
    try:
      return super().read(name)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
      raise SourceError(f"{self.path}: member {name} cannot be read ({e}): the archive is "
                        "corrupt (download it again)") from None


class _Slice(io.RawIOBase):
  """Bytes [offset, offset + size) of a file, as a read-only file object (a tar member)."""

  def __init__(self, path: str, offset: int, size: int):
    self._f = open(path, "rb")
    self._f.seek(offset)
    self._left = size

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    n = self._f.readinto(memoryview(buffer)[:self._left]) if self._left else 0
    self._left -= n
    return n

  def close(self) -> None:
    self._f.close()
    super().close()


class TarArchive(Archive):
  """A tar file. Uncompressed: indexed once (member -> offset), then read by seeking.
  Compressed (.tar.gz): members are read by decompressing from the start (small archives only)."""

  def __init__(self, path: str):
    self.path = path
    self._compressed = not path.endswith(".tar")
    self._index: dict[str, tuple[int, int]] = {}
    file_size = os.path.getsize(path)
    try:
      with tarfile.open(path, "r:*") as tar:
        for member in tar:
          if member.isfile():
            self._index[member.name] = (member.offset_data, member.size)
            if not self._compressed and member.offset_data + member.size > file_size:
              raise SourceError(f"{path} is truncated: member {member.name} ends at byte "
                                f"{member.offset_data + member.size:,}, the file has {file_size:,} "
                                "(download it again)")
        end = tar.offset
      if not self._compressed:  # a whole tar ends with two zero blocks after its last member
        with open(path, "rb") as f:
          f.seek(end)
          if f.read(1024) != bytes(1024):
            raise SourceError(f"{path} is truncated: it stops after {len(self._index):,} members "
                              "without the end-of-archive blocks (download it again)")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
      raise SourceError(f"{path} is not a complete tar archive ({e}): the download is truncated "
                        "or it is another file (download it again)") from None
    if not self._index:
      raise SourceError(f"{path} holds no files: not the publisher's archive")

  def names(self) -> list[str]:
    return list(self._index)

  def __contains__(self, name: str) -> bool:
    return name in self._index

  def size(self, name: str) -> int:
    return self._index[name][1]

  def open(self, name: str) -> BinaryIO:
    if name not in self._index:
      raise self.missing(name)
    if self._compressed:
      tar = tarfile.open(self.path, "r:*")
      return io.BytesIO(tar.extractfile(name).read())
    return io.BufferedReader(_Slice(self.path, *self._index[name]), 1 << 20)


def iter_tar(fileobj: BinaryIO, where: str) -> Iterator[tuple[str, bytes]]:
  """(member name, bytes) of each file of the tar stream `fileobj`, read once in order (memory:
  one member at a time). `where` names the stream in errors."""
  try:
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
      for member in tar:
        if member.isfile():
          data = tar.extractfile(member).read()
          if len(data) != member.size:
            raise SourceError(f"{where}: member {member.name} is truncated")
          yield member.name, data
  except (tarfile.TarError, EOFError) as e:
    raise SourceError(f"{where} is not a complete tar archive ({e}): truncated or another file "
                      "(download it again)") from None


def open_archive(path: str, check: bool = True) -> Archive:
  """The Archive for an archive file (by extension) or an extracted folder."""
  if os.path.isdir(path):
    return FolderArchive(path)
  if check:
    verify(path)
  if path.endswith(".zip"):
    return ZipArchive(path)
  return TarArchive(path)


def find(root: str, archive: str, probe: str, folder: str = "", check: bool = True) -> Archive:
  """The publisher's file `archive` in `root`, or the folder it was extracted into.

  root: the --source folder.
  archive: the publisher's file name, e.g. 'cifar-10-python.tar.gz'.
  probe: a member the publisher's archive always has, e.g. 'cifar-10-batches-py/batches.meta';
    it tells the extracted folder apart, and its absence from the archive is an error.
  folder: where the archive's members lie once extracted, relative to root ('' when the archive
    has its own top folder, as most do; 'ILSVRC2012_img_train' for ImageNet's flat tars).
  """
  path = os.path.join(root, archive)
  if os.path.isfile(path):
    source = open_archive(path, check)
  elif os.path.isfile(os.path.join(root, folder, *probe.split("/"))):
    return FolderArchive(os.path.join(root, folder))
  else:
    extracted = os.path.join(root, folder, *probe.split("/"))
    raise SourceError(f"{archive} not found in {root}: put the publisher's {archive} there, or its "
                      f"extracted contents (looked for {extracted})")
  if probe not in source:
    raise source.missing(probe)
  return source


def find_file(root: str, name: str, check: bool = True) -> str:
  """The path of a plain (not archived) source file `name` in root; SourceError if missing."""
  path = os.path.join(root, name)
  if not os.path.isfile(path):
    raise SourceError(f"{name} not found in {root}: put the publisher's {name} there")
  if check:
    verify(path)
  return path
