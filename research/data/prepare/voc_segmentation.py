"""`voc2012_segmentation` (this project's dataset, research/data/builders/voc_segmentation) from
the PASCAL VOC 2012 tar and, for the train_aug split, SBD's augmented masks.

Source folder: VOCtrainval_11-May-2012.tar, or its extracted VOCdevkit/VOC2012/ (the folder may
also hold VOC2012/ itself, or be it); optionally SegmentationClassAug.zip (DeepLab's distribution
of SBD's masks as greyscale PNGs of class indices), or its extracted folder SegmentationClassAug/,
in the source folder or in VOC2012/.
Splits: train and val from ImageSets/Segmentation with SegmentationClass masks; train_aug (only
with SegmentationClassAug) every image with an augmented mask, less the val images (10,582).
"""
from __future__ import annotations

import io
import os
import re
from typing import Iterator, Optional

from PIL import Image

from research.data.builders.voc_segmentation import Builder, image_id, read_mask
from research.data.prepare import common, sources, writer

NAMES = ("voc2012_segmentation",)
HELP = ("VOCtrainval_11-May-2012.tar (or VOCdevkit/VOC2012/ extracted); for train_aug also "
        "SegmentationClassAug.zip (or SegmentationClassAug/)")
TAR = "VOCtrainval_11-May-2012.tar"
_ID = re.compile(r"^\d{4}_\d{6}$")
_SHARD = 1000


def _devkit(source: str, check: bool) -> tuple[sources.Archive, str]:
  """(archive, the member prefix of VOC2012's folders)."""
  for prefix in ("VOC2012", ""):  # older layouts: DIR/VOC2012/JPEGImages or DIR/JPEGImages
    if os.path.isdir(os.path.join(source, prefix, "JPEGImages")) and not os.path.isfile(os.path.join(source, TAR)):
      if not os.path.isdir(os.path.join(source, "VOCdevkit", "VOC2012")):
        return sources.FolderArchive(source), prefix
  archive = sources.find(source, TAR, "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt", check=check)
  return archive, "VOCdevkit/VOC2012"


def _join(prefix: str, name: str) -> str:
  return f"{prefix}/{name}" if prefix else name


def _aug(source: str, voc: sources.Archive, prefix: str) -> Optional[tuple[sources.Archive, str]]:
  """(archive, prefix) of the SegmentationClassAug masks, or None without them."""
  inside = os.path.join(voc.path, *prefix.split("/"), "SegmentationClassAug") if isinstance(
      voc, sources.FolderArchive) else None
  if inside and os.path.isdir(inside):
    return sources.FolderArchive(inside), ""
  if isinstance(voc, sources.TarArchive) and any(
      n.startswith(f"{prefix}/SegmentationClassAug/") for n in voc.names()):
    return voc, f"{prefix}/SegmentationClassAug"
  if os.path.isdir(os.path.join(source, "SegmentationClassAug")):
    return sources.FolderArchive(os.path.join(source, "SegmentationClassAug")), ""
  if os.path.isfile(os.path.join(source, "SegmentationClassAug.zip")):
    return sources.open_archive(os.path.join(source, "SegmentationClassAug.zip")), "SegmentationClassAug"
  return None


def read_ids(archive: sources.Archive, member: str) -> list[str]:
  """The image ids listed one a line in an ImageSets file, e.g. ['2007_000032', ...]."""
  ids = [line.strip() for line in archive.read(member).decode().splitlines() if line.strip()]
  bad = [i for i in ids if not _ID.match(i)]
  if bad:
    raise sources.SourceError(f"{archive.path}: {member} lists no VOC image ids (YYYY_NNNNNN): {bad[:5]}")
  return ids


def plan(name: str, source: str, data_dir: str, check: bool = True) -> writer.Plan:
  voc, prefix = _devkit(source, check)
  sets = _join(prefix, "ImageSets/Segmentation")
  masks = (voc, _join(prefix, "SegmentationClass"))
  val = read_ids(voc, f"{sets}/val.txt")
  parts = [("train", read_ids(voc, f"{sets}/train.txt"), masks), ("val", val, masks)]
  aug = _aug(source, voc, prefix)
  if aug:
    val_ids = set(val)
    under = _join(aug[1], "")
    aug_ids = sorted(n[len(under):-4] for n in aug[0].names()
                     if n.startswith(under) and n.endswith(".png") and "/" not in n[len(under):]
                     and n[len(under):-4] not in val_ids)
    parts.append(("train_aug", aug_ids, aug))
  jobs = []
  for split, ids, (mask_archive, mask_prefix) in parts:
    for chunk in writer.shards(ids, -(-len(ids) // _SHARD)):
      size = sum(voc.size(_join(prefix, f"JPEGImages/{i}.jpg")) for i in chunk
                 if _join(prefix, f"JPEGImages/{i}.jpg") in voc)
      jobs.append(writer.Job(split, (voc, prefix, mask_archive, mask_prefix, chunk), size))
  builder = Builder(data_dir=data_dir, file_format="array_record")
  return writer.Plan(builder, generate, jobs, output_ratio=1.3)


def generate(args) -> Iterator[dict]:
  voc, prefix, mask_archive, mask_prefix, ids = args
  for voc_id in ids:
    mask_member = _join(mask_prefix, f"{voc_id}.png")
    where = f"{mask_archive.path}:{mask_member}"
    try:
      mask = read_mask(io.BytesIO(mask_archive.read(mask_member)), where)
    except ValueError as e:
      raise sources.SourceError(str(e)) from None
    member = _join(prefix, f"JPEGImages/{voc_id}.jpg")
    data = common.image_bytes(voc.read(member), f"{voc.path}:{member}")
    with Image.open(io.BytesIO(data)) as image:
      if image.size != (mask.shape[1], mask.shape[0]):
        raise sources.SourceError(f"{voc.path}:{member} is {image.size[0]}x{image.size[1]} (WxH) but its "
                                  f"mask {where} is {mask.shape[1]}x{mask.shape[0]}")
    yield {
        "image": data,
        "image/id": image_id(voc_id),
        "image/filename": f"{voc_id}.jpg",
        "segmentation_mask": Image.fromarray(mask, mode="L"),
    }
