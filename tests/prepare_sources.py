"""Tiny sources in the publishers' exact layouts (archive and member names, pickle / JSON / XML /
text / IDX schemas), written as the archives or as their extracted folders, with the examples
the prepared dataset must hold (decoded, as research.data.datasets returns them)."""
from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

# Every test of the preparation runs without TensorFlow, as users' environments do.
assert importlib.util.find_spec("tensorflow") is None, "the prepare_data tests must run without TensorFlow"


@dataclasses.dataclass
class Case:
  """name: catalog name; archives: {archive file: {member: bytes}}; folders: {archive file: the
  folder, relative to the source, its members are extracted into}; plain: {file: bytes};
  expected: {split: {key: example}}, key: the feature naming an example; names: {feature path:
  label names the dataset must have}."""

  name: str
  archives: dict
  plain: dict
  expected: dict
  key: str
  names: dict
  folders: dict = dataclasses.field(default_factory=dict)


def tar_bytes(members: dict, gz: bool = False) -> bytes:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return buffer.getvalue()


def zip_bytes(members: dict) -> bytes:
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as z:
    for name, data in members.items():
      z.writestr(name, data)
  return buffer.getvalue()


def write(case: Case, root: str, extracted: bool) -> str:
  """Writes the case's source into root (archives, or their extracted contents); returns root."""
  os.makedirs(root, exist_ok=True)
  for name, data in case.plain.items():
    if extracted and name.endswith(".gz"):
      name, data = name[:-3], gzip.decompress(data)
    with open(os.path.join(root, name), "wb") as f:
      f.write(data)
  for archive, members in case.archives.items():
    if extracted:
      base = os.path.join(root, case.folders.get(archive, ""))
      for member, data in members.items():
        path = os.path.join(base, *member.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
          f.write(data)
    else:
      data = zip_bytes(members) if archive.endswith(".zip") else tar_bytes(members, archive.endswith(".gz"))
      with open(os.path.join(root, archive), "wb") as f:
        f.write(data)
  return root


def jpeg(rng: np.random.Generator, h: int, w: int, grey: bool = False) -> tuple[bytes, np.ndarray]:
  """(JPEG bytes of a smooth random picture, the array PIL decodes them to, [h, w, 3])."""
  ramp = np.linspace(0, 200, w)[None, :, None] + np.linspace(0, 50, h)[:, None, None]
  image = np.clip(ramp + rng.normal(0, 3, (h, w, 1 if grey else 3)) + rng.integers(0, 50, 3 if not grey else 1),
                  0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if grey else image).save(buffer, format="JPEG", quality=90)
  data = buffer.getvalue()
  decoded = np.asarray(Image.open(io.BytesIO(data)))
  return data, np.repeat(decoded[..., None], 3, -1) if grey else decoded


def idx(array: np.ndarray) -> bytes:
  return struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()


def mnist() -> Case:
  rng = np.random.default_rng(0)
  plain, expected = {}, {}
  for split, prefix, n in (("train", "train", 5), ("test", "t10k", 3)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    plain[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx(images))
    plain[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx(labels))
    # no key feature in mnist: examples are keyed by their position
    expected[split] = {i: {"image": images[i][..., None], "label": int(labels[i])} for i in range(n)}
  return Case("mnist", {}, plain, expected, key="", names={})


def cifar(name: str) -> Case:
  rng = np.random.default_rng(1)
  c10 = name == "cifar10"
  top = "cifar-10-batches-py" if c10 else "cifar-100-python"
  files = {"train": [f"data_batch_{i}" for i in range(1, 6)] if c10 else ["train"],
           "test": ["test_batch"] if c10 else ["test"]}
  members, expected = {}, {}
  fine = [f"fine_{i:03d}" for i in range(100)]
  coarse = [f"coarse_{i:02d}" for i in range(20)]
  label_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
  if c10:
    meta = {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in label_names], b"num_vis": 3072}
  else:
    meta = {b"fine_label_names": [n.encode() for n in fine], b"coarse_label_names": [n.encode() for n in coarse]}
  members[f"{top}/{'batches.meta' if c10 else 'meta'}"] = pickle.dumps(meta, protocol=2)
  for split, names in files.items():
    expected[split] = {}
    for file in names:
      n = 2 if c10 else 4
      data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
      batch = {b"batch_label": b"batch", b"data": data, b"filenames": [b"x.png"] * n}
      labels = rng.integers(0, 10 if c10 else 100, n).tolist()
      if c10:
        batch[b"labels"] = labels
      else:
        batch[b"fine_labels"], batch[b"coarse_labels"] = labels, rng.integers(0, 20, n).tolist()
      members[f"{top}/{file}"] = pickle.dumps(batch, protocol=2)
      for i in range(n):
        key = f"{split}_{len(expected[split]):05d}"
        example = {"id": key, "image": data[i].reshape(3, 32, 32).transpose(1, 2, 0), "label": labels[i]}
        if not c10:
          example["coarse_label"] = batch[b"coarse_labels"][i]
        expected[split][key] = example
  archive = "cifar-10-python.tar.gz" if c10 else "cifar-100-python.tar.gz"
  names = {"label": label_names} if c10 else {"label": fine, "coarse_label": coarse}
  return Case(name, {archive: members}, {}, expected, key="id", names=names)


def imagenet(extracted: bool) -> Case:
  rng = np.random.default_rng(2)
  synsets = tfds.builder_cls("imagenet2012")().info.features["label"].names
  val_labels = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt").read_text().split()
  train, expected = {}, {"train": {}, "validation": {}}
  for synset in (synsets[0], synsets[7], synsets[999]):
    images = {}
    for k in range(2):
      data, decoded = jpeg(rng, int(rng.integers(20, 40)), int(rng.integers(20, 40)), grey=k == 1)
      images[f"{synset}_{k + 1}.JPEG"] = data
      expected["train"][f"{synset}_{k + 1}.JPEG"] = {"image": decoded, "label": synsets.index(synset),
                                                     "file_name": f"{synset}_{k + 1}.JPEG"}
    if extracted:  # one folder of JPEGs per class
      train.update({f"{synset}/{f}": d for f, d in images.items()})
    else:
      train[f"{synset}.tar"] = tar_bytes(images)
  val = {}
  for number in (1, 2, 3, 50000):
    name = f"ILSVRC2012_val_{number:08d}.JPEG"
    data, decoded = jpeg(rng, 24, 30)
    val[name] = data
    expected["validation"][name] = {"image": decoded, "label": synsets.index(val_labels[number - 1]),
                                    "file_name": name}
  return Case("imagenet2012", {"ILSVRC2012_img_train.tar": train, "ILSVRC2012_img_val.tar": val}, {},
              expected, key="file_name", names={"label": synsets},
              folders={"ILSVRC2012_img_train.tar": "ILSVRC2012_img_train",
                       "ILSVRC2012_img_val.tar": "ILSVRC2012_img_val"})


def _coco_categories() -> list[dict]:
  ids = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # COCO's 80 ids
  return [{"supercategory": "thing", "id": i, "name": f"category {i}"} for i in ids]


def _coco_split(rng, folder: str, image_ids: list[int], with_objects: bool, prefix: str = ""):
  """(images zip members, annotation JSON dict, {file name: expected example})."""
  categories = _coco_categories()
  members, images, annotations, expected = {}, [], [], {}
  for image_id in image_ids:
    h, w = int(rng.integers(30, 50)), int(rng.integers(30, 50))
    file_name = f"{prefix}{image_id:012d}.jpg"
    data, decoded = jpeg(rng, h, w)
    members[f"{folder}/{file_name}"] = data
    images.append({"license": 1, "file_name": file_name, "coco_url": "", "height": h, "width": w,
                   "date_captured": "", "flickr_url": "", "id": image_id})
    objects = {"id": [], "area": [], "bbox": [], "label": [], "is_crowd": []}
    n = int(rng.integers(0, 4)) if with_objects and image_id % 3 else 0
    for _ in range(n):
      x, y = float(rng.uniform(0, w / 2)), float(rng.uniform(0, h / 2))
      bw, bh = float(rng.uniform(1, w / 2)), float(rng.uniform(1, h / 2))
      cat = int(rng.integers(0, 80))
      ann_id = int(rng.integers(1, 10**6)) * 100 + len(annotations)
      area = bw * bh * 0.7
      annotations.append({"segmentation": [[x, y, x + bw, y, x, y + bh]], "area": area, "iscrowd": int(len(annotations) % 4 == 3),
                          "image_id": image_id, "bbox": [x, y, bw, bh], "category_id": categories[cat]["id"], "id": ann_id})
    mine = sorted((a for a in annotations if a["image_id"] == image_id), key=lambda a: a["id"])
    for a in mine:
      x, y, bw, bh = a["bbox"]
      objects["id"].append(a["id"])
      objects["area"].append(int(a["area"]))
      objects["bbox"].append([y / h, x / w, (y + bh) / h, (x + bw) / w])
      objects["label"].append([c["id"] for c in categories].index(a["category_id"]))
      objects["is_crowd"].append(bool(a["iscrowd"]))
    objects["bbox"] = np.array(objects["bbox"], np.float32).reshape(-1, 4)
    expected[file_name] = {"image": decoded, "image/filename": file_name, "image/id": image_id, "objects": objects}
  info = {"info": {}, "licenses": [], "images": images, "categories": categories}
  if with_objects:
    info["annotations"] = annotations
  return members, info, expected


def coco2017() -> Case:
  rng = np.random.default_rng(3)
  archives, expected = {}, {}
  annotation_members = {}
  for split, folder, ids in (("train", "train2017", [9, 25, 30, 42]), ("validation", "val2017", [139, 285]),
                             ("test", "test2017", [1, 16])):
    members, info, expected[split] = _coco_split(rng, folder, ids, split != "test")
    archives[f"{folder}.zip"] = members
    if split == "test":
      archives["image_info_test2017.zip"] = {"annotations/image_info_test2017.json": json.dumps(info).encode()}
    else:
      annotation_members[f"annotations/instances_{folder}.json"] = json.dumps(info).encode()
  annotation_members["annotations/captions_val2017.json"] = b"{}"
  archives["annotations_trainval2017.zip"] = annotation_members
  return Case("coco/2017", archives, {}, expected, key="image/filename",
              names={"objects/label": [c["name"] for c in _coco_categories()]})


def coco_captions() -> Case:
  rng = np.random.default_rng(4)
  archives, by_file = {}, {}
  annotation_members = {}
  for folder, ids in (("train2014", [9, 25, 30]), ("val2014", [42, 73, 74, 133, 136])):
    members, info, examples = _coco_split(rng, folder, ids, True, prefix=f"COCO_{folder}_")
    archives[f"{folder}.zip"] = members
    annotation_members[f"annotations/instances_{folder}.json"] = json.dumps(info).encode()
    by_file.update({f: (folder, e) for f, e in examples.items()})
  archives["annotations_trainval2014.zip"] = annotation_members
  karpathy_split = {"COCO_train2014_000000000009.jpg": "train", "COCO_train2014_000000000025.jpg": "train",
                    # COCO_train2014_000000000030.jpg: in no Karpathy split, so in no split
                    "COCO_val2014_000000000042.jpg": "val", "COCO_val2014_000000000073.jpg": "test",
                    "COCO_val2014_000000000074.jpg": "restval", "COCO_val2014_000000000133.jpg": "restval",
                    "COCO_val2014_000000000136.jpg": "test"}
  images, expected, sentid = [], {"train": {}, "val": {}, "test": {}, "restval": {}}, 0
  for imgid, (file_name, split) in enumerate(karpathy_split.items()):
    folder, example = by_file[file_name]
    sentences = []
    for k in range(5 + (imgid == 3)):  # one image with six captions, as some COCO images have
      raw = f"A picture {imgid} with caption {k}."
      sentences.append({"tokens": raw.lower().strip(".").split(), "raw": raw, "imgid": imgid, "sentid": sentid})
      sentid += 1
    images.append({"filepath": folder, "sentids": [s["sentid"] for s in sentences], "filename": file_name,
                   "imgid": imgid, "split": split, "sentences": sentences, "cocoid": example["image/id"]})
    expected[split][file_name] = dict(example, captions={"text": [s["raw"] for s in sentences],
                                                         "id": [s["sentid"] for s in sentences]})
  plain = {"dataset_coco.json": json.dumps({"images": images, "dataset": "coco"}).encode()}
  return Case("coco_captions", archives, plain, expected, key="image/filename",
              names={"objects/label": [c["name"] for c in _coco_categories()]})


VOC_LABELS = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
              "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
              "train", "tvmonitor")
VOC_POSES = ("frontal", "rear", "left", "right", "unspecified")


def _voc_annotation(rng, image_id: str, h: int, w: int) -> tuple[bytes, dict]:
  objects = {"label": [], "bbox": [], "pose": [], "is_truncated": [], "is_difficult": []}
  xml = [f"<annotation><folder>VOC</folder><filename>{image_id}.jpg</filename><size><width>{w}</width>"
         f"<height>{h}</height><depth>3</depth></size><segmented>0</segmented>"]
  for k in range(int(rng.integers(1, 4))):
    label, pose = int(rng.integers(0, 20)), int(rng.integers(0, 5))
    x0, y0 = int(rng.integers(1, w // 2)), int(rng.integers(1, h // 2))
    x1, y1 = int(rng.integers(x0 + 1, w)), int(rng.integers(y0 + 1, h))
    truncated, difficult = k == 1, k == 2
    xml.append(f"<object><name>{VOC_LABELS[label]}</name><pose>{VOC_POSES[pose].capitalize()}</pose>"
               f"<truncated>{int(truncated)}</truncated><difficult>{int(difficult)}</difficult>"
               f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    objects["label"].append(label)
    objects["bbox"].append([y0 / h, x0 / w, y1 / h, x1 / w])
    objects["pose"].append(pose)
    objects["is_truncated"].append(truncated)
    objects["is_difficult"].append(difficult)
  xml.append("</annotation>")
  objects["bbox"] = np.array(objects["bbox"], np.float32)
  labels = sorted(set(objects["label"]), key=lambda i: VOC_LABELS[i])
  no_difficult = sorted({l for l, d in zip(objects["label"], objects["is_difficult"]) if not d},
                        key=lambda i: VOC_LABELS[i])
  return "".join(xml).encode(), {"objects": objects, "labels": labels, "labels_no_difficult": no_difficult}


def voc(name: str) -> Case:
  year = name.split("/")[1]
  rng = np.random.default_rng(5 + int(year))
  base = f"VOCdevkit/VOC{year}"
  parts = {"train": ("train", "trainval"), "validation": ("val", "trainval")}
  if year == "2007":
    parts["test"] = ("test", "test")
  tars = {"trainval": {}, "test": {}}
  expected = {}
  counter = 5
  for split, (set_name, tar) in parts.items():
    ids = []
    expected[split] = {}
    for _ in range(3):
      image_id = f"{counter:06d}" if year == "2007" else f"2008_{counter:06d}"
      counter += 1
      h, w = int(rng.integers(30, 50)), int(rng.integers(30, 50))
      data, decoded = jpeg(rng, h, w)
      xml, example = _voc_annotation(rng, image_id, h, w)
      tars[tar][f"{base}/JPEGImages/{image_id}.jpg"] = data
      tars[tar][f"{base}/Annotations/{image_id}.xml"] = xml
      ids.append(image_id)
      expected[split][f"{image_id}.jpg"] = dict(example, image=decoded, **{"image/filename": f"{image_id}.jpg"})
    tars[tar][f"{base}/ImageSets/Main/{set_name}.txt"] = ("\n".join(ids) + "\n").encode()
  names = {"VOCtrainval_06-Nov-2007.tar": "trainval", "VOCtest_06-Nov-2007.tar": "test"} if year == "2007" else {
      "VOCtrainval_11-May-2012.tar": "trainval"}
  return Case(name, {archive: tars[k] for archive, k in names.items()}, {}, expected, key="image/filename",
              names={"objects/label": list(VOC_LABELS), "objects/pose": list(VOC_POSES)})


def voc_segmentation() -> Case:
  rng = np.random.default_rng(6)
  base = "VOCdevkit/VOC2012"
  ids = {"train": ["2007_000032", "2008_000002"], "val": ["2007_000033"]}
  aug_only = ["2010_000005"]
  tar, aug, expected = {}, {}, {"train": {}, "val": {}, "train_aug": {}}
  images = {}
  for voc_id in ids["train"] + ids["val"] + aug_only:
    h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
    data, decoded = jpeg(rng, h, w)
    tar[f"{base}/JPEGImages/{voc_id}.jpg"] = data
    images[voc_id] = decoded
  palette = [v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)]
  for split, split_ids in ids.items():
    tar[f"{base}/ImageSets/Segmentation/{split}.txt"] = ("\n".join(split_ids) + "\n").encode()
    for voc_id in split_ids:
      mask = rng.integers(0, 21, images[voc_id].shape[:2]).astype(np.uint8)
      mask[0] = 255
      png = Image.fromarray(mask, mode="P")
      png.putpalette(palette)
      buffer = io.BytesIO()
      png.save(buffer, format="PNG")
      tar[f"{base}/SegmentationClass/{voc_id}.png"] = buffer.getvalue()
      expected[split][f"{voc_id}.jpg"] = _seg_example(voc_id, images[voc_id], mask)
  for voc_id in ids["train"] + aug_only + ids["val"]:
    mask = rng.integers(0, 21, images[voc_id].shape[:2]).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    aug[f"SegmentationClassAug/{voc_id}.png"] = buffer.getvalue()
    if voc_id not in ids["val"]:
      expected["train_aug"][f"{voc_id}.jpg"] = _seg_example(voc_id, images[voc_id], mask)
  return Case("voc2012_segmentation", {"VOCtrainval_11-May-2012.tar": tar, "SegmentationClassAug.zip": aug},
              {}, expected, key="image/filename", names={})


def _seg_example(voc_id: str, image: np.ndarray, mask: np.ndarray) -> dict:
  return {"image": image, "image/id": int(voc_id.replace("_", "")), "image/filename": f"{voc_id}.jpg",
          "segmentation_mask": mask[..., None]}


CELEBA_LANDMARKS = ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
                    "rightmouth_x rightmouth_y").split()


def celeb_a() -> Case:
  rng = np.random.default_rng(7)
  attributes = list(tfds.builder_cls("celeb_a")().info.features["attributes"].keys())
  rng.shuffle(attributes)  # (the file's column order need not be TFDS's)
  files = [f"{i:06d}.jpg" for i in range(1, 8)]
  partition = [0, 0, 0, 1, 1, 2, 2]
  members, expected = {}, {"train": {}, "validation": {}, "test": {}}
  attr_lines = [str(len(files)), " ".join(attributes)]
  mark_lines = [str(len(files)), " ".join(CELEBA_LANDMARKS)]
  identity_lines, partition_lines = [], []
  for file_name, part in zip(files, partition):
    data, decoded = jpeg(rng, 218, 178)
    members[f"img_align_celeba/{file_name}"] = data
    attr = rng.choice([-1, 1], len(attributes))
    marks = rng.integers(60, 160, len(CELEBA_LANDMARKS))
    identity = int(rng.integers(1, 10178))
    attr_lines.append(file_name + " " + " ".join(f"{v:2d}" for v in attr))
    mark_lines.append(file_name + " " + " ".join(f"{v:4d}" for v in marks))
    identity_lines.append(f"{file_name} {identity}")
    partition_lines.append(f"{file_name} {part}")
    split = ("train", "validation", "test")[part]
    expected[split][file_name] = {
        "image": decoded, "landmarks": dict(zip(CELEBA_LANDMARKS, marks.tolist())),
        "attributes": {k: bool(v > 0) for k, v in zip(attributes, attr)},
        "identity": {"Identity_No": identity}}
  plain = {"list_eval_partition.txt": "\n".join(partition_lines) + "\n",
           "list_attr_celeba.txt": "\n".join(attr_lines) + "\n",
           "list_landmarks_align_celeba.txt": "\n".join(mark_lines) + "\n",
           "identity_CelebA.txt": "\n".join(identity_lines) + "\n"}
  # The images are matched by content: celeb_a stores no file name.
  return Case("celeb_a", {"img_align_celeba.zip": members}, {k: v.encode() for k, v in plain.items()},
              expected, key="", names={})


def case(name: str, extracted: bool = False) -> Case:
  """The tiny source of dataset `name`."""
  makers = {"mnist": mnist, "cifar10": lambda: cifar("cifar10"), "cifar100": lambda: cifar("cifar100"),
            "imagenet2012": lambda: imagenet(extracted), "coco/2017": coco2017, "coco_captions": coco_captions,
            "voc/2007": lambda: voc("voc/2007"), "voc/2012": lambda: voc("voc/2012"),
            "voc2012_segmentation": voc_segmentation, "celeb_a": celeb_a}
  return makers[name]()
