"""COCO (pycocotools) and VOC07 11-point detection metrics on [x1, y1, x2, y2] pixel boxes."""
import contextlib
import io

import numpy as np
import pytest

from research.evaluation.detection import (coco_detection_metrics, voc07_11point_ap,
                                           voc07_detection_metrics)


def pad(per_image, width, fill=0.0):
  """Stack ragged per-image lists into padded arrays [N, width, ...] and a validity mask."""
  first = np.asarray(per_image[0])
  out = np.full((len(per_image), width) + first.shape[1:], fill, first.dtype)
  valid = np.zeros((len(per_image), width), bool)
  for i, rows in enumerate(per_image):
    out[i, :len(rows)] = rows
    valid[i, :len(rows)] = True
  return out, valid


def hand_case():
  """One image, one ground-truth box, two detections: IoU 0.72 at score 0.9, exact at 0.8."""
  gt_boxes = np.array([[[10, 10, 60, 60]]], np.float32)
  # 50 x 36 inside the 50 x 50 box: IoU 0.72.
  pred_boxes = np.array([[[10, 10, 60, 46], [10, 10, 60, 60], [0, 0, 1, 1]]], np.float32)
  pred_scores = np.array([[0.9, 0.8, 0.99]], np.float32)
  return dict(pred_boxes=pred_boxes, pred_scores=pred_scores,
              pred_labels=np.array([[3, 3, 3]]), pred_valid=np.array([[True, True, False]]),
              gt_boxes=gt_boxes, gt_labels=np.array([[3]]), gt_valid=np.array([[True]]))


def test_coco_hand_computed():
  # IoU thresholds .5-.7 match the first detection: AP 1. At .75-.95 it is a false positive
  # ranked above the true positive: precision 1/2 at recall 1, AP 0.5. Mean 0.75. The padded
  # third detection (score 0.99, no overlap) would lower every AP if it were counted.
  stats = coco_detection_metrics(**hand_case())
  assert stats["mAP"] == pytest.approx(0.75)
  assert stats["AP50"] == pytest.approx(1.0)
  assert stats["AP75"] == pytest.approx(0.5)
  assert stats["AR100"] == pytest.approx(1.0)


def test_coco_perfect_missing_and_crowd():
  case = hand_case()
  perfect = dict(case, pred_boxes=case["gt_boxes"], pred_scores=np.ones((1, 1)),
                 pred_labels=case["gt_labels"], pred_valid=np.ones((1, 1), bool))
  assert coco_detection_metrics(**perfect)["mAP"] == pytest.approx(1.0)
  nothing = dict(case, pred_valid=np.zeros((1, 3), bool))
  assert coco_detection_metrics(**nothing)["mAP"] == 0.0
  # A detection on a crowd region is ignored rather than a false positive.
  crowd = dict(perfect, gt_boxes=np.array([[[10, 10, 60, 60], [100, 100, 200, 200]]], np.float32),
               gt_labels=np.array([[3, 3]]), gt_valid=np.ones((1, 2), bool),
               gt_crowd=np.array([[False, True]]),
               pred_boxes=np.array([[[100, 100, 200, 200], [10, 10, 60, 60]]], np.float32),
               pred_scores=np.array([[0.9, 0.8]]), pred_labels=np.array([[3, 3]]),
               pred_valid=np.ones((1, 2), bool))
  assert coco_detection_metrics(**crowd)["mAP"] == pytest.approx(1.0)


def test_coco_agrees_with_the_loadres_path():
  """Random data through the usual pycocotools flow: xywh result list + COCO.loadRes."""
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  rng = np.random.default_rng(0)
  gts, gt_labels, preds, scores, labels = [], [], [], [], []
  for _ in range(6):
    g = rng.integers(1, 6)
    xy = rng.uniform(0, 200, (g, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 150, (g, 2))], 1)
    gts.append(boxes)
    gt_labels.append(rng.integers(1, 4, g))
    k = rng.integers(g, 12)
    jitter = boxes[rng.integers(0, g, k)] + rng.normal(scale=6.0, size=(k, 4))
    preds.append(jitter)
    scores.append(rng.uniform(size=k))
    labels.append(np.where(rng.uniform(size=k) < 0.8, gt_labels[-1][rng.integers(0, g, k)], 3))
  gt_boxes, gt_valid = pad(gts, 6)
  pred_boxes, pred_valid = pad(preds, 12)
  ours = coco_detection_metrics(pred_boxes, pad(scores, 12)[0], pad(labels, 12)[0], pred_valid,
                                gt_boxes, pad(gt_labels, 6)[0], gt_valid)

  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = {
        "images": [{"id": i + 1} for i in range(6)],
        "categories": [{"id": c} for c in (1, 2, 3)],
        "annotations": [
            {"id": 1000 * i + j + 1, "image_id": i + 1, "category_id": int(gt_labels[i][j]),
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
             "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0}
            for i in range(6) for j, b in enumerate(gts[i])]}
    coco_gt.createIndex()
    results = [{"image_id": i + 1, "category_id": int(labels[i][j]), "score": float(scores[i][j]),
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
               for i in range(6) for j, b in enumerate(preds[i])]
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  np.testing.assert_allclose([ours["mAP"], ours["AP50"], ours["AP75"]], evaluator.stats[:3])
  assert 0.05 < ours["mAP"] < 0.95


def test_voc07_11point_ap_hand_computed():
  # Recall reaches 1/3 at precision 1 and 2/3 at precision 1/2, never more:
  # points 0, .1, .2, .3 -> 1; .4, .5, .6 -> .5; .7 ... 1 -> 0.  (4 + 1.5) / 11 = 0.5.
  assert voc07_11point_ap(np.array([1, .5, 1 / 3, .5, .4]),
                          np.array([1, 1, 1, 2, 2]) / 3) == pytest.approx(0.5)
  assert voc07_11point_ap(np.zeros(0), np.zeros(0)) == 0.0


def test_voc07_hand_computed():
  # Class 0: A, B in image 0; C (difficult) and D in image 1: three positives.
  gt_boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]],
                       [[0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80]]], np.float32)
  gt_labels = np.array([[0, 0, 0], [0, 0, 1]])
  gt_valid = np.array([[True, True, False], [True, True, True]])
  gt_difficult = np.array([[False, False, False], [True, False, False]])
  # In score order: exact on A (TP), A again (duplicate: FP), on difficult C (ignored),
  # nothing near (FP), on B at IoU 2/3 (TP), on D at IoU 0.43 (FP); class 1 exact (TP);
  # class 2 has no ground truth.
  pred_boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 35], [0, 0, 5, 5]],
                         [[0, 0, 10, 10], [100, 100, 110, 110], [54, 50, 64, 60],
                          [70, 70, 80, 80]]], np.float32)
  pred_scores = np.array([[0.9, 0.8, 0.5, 0.1], [0.7, 0.6, 0.4, 0.3]])
  pred_labels = np.array([[0, 0, 0, 2], [0, 0, 0, 1]])
  pred_valid = np.ones((2, 4), bool)
  result = voc07_detection_metrics(pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes,
                                   gt_labels, gt_valid, num_classes=3, gt_difficult=gt_difficult)
  assert result["AP"][:2] == pytest.approx([0.5, 1.0])
  assert np.isnan(result["AP"][2])
  assert result["mAP"] == pytest.approx(0.75)


def reference_voc07(pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels,
                    gt_valid, gt_difficult, num_classes):
  """The py-faster-rcnn voc_eval loop (continuous IoU, no +1), one detection at a time."""
  aps = []
  for c in range(num_classes):
    records = {}
    npos = 0
    for i in range(gt_boxes.shape[0]):
      keep = gt_valid[i] & (gt_labels[i] == c)
      records[i] = {"bbox": gt_boxes[i][keep], "difficult": gt_difficult[i][keep],
                    "det": [False] * int(keep.sum())}
      npos += int((~gt_difficult[i][keep]).sum())
    dets = [(i, pred_scores[i, k], pred_boxes[i, k]) for i in range(pred_boxes.shape[0])
            for k in range(pred_boxes.shape[1]) if pred_valid[i, k] and pred_labels[i, k] == c]
    order = np.argsort([-d[1] for d in dets], kind="stable")
    tp = np.zeros(len(dets))
    fp = np.zeros(len(dets))
    for rank, d in enumerate(order):
      i, _, bb = dets[d]
      r = records[i]
      ovmax, jmax = -np.inf, -1
      for j, g in enumerate(r["bbox"]):
        iw = max(min(bb[2], g[2]) - max(bb[0], g[0]), 0.0)
        ih = max(min(bb[3], g[3]) - max(bb[1], g[1]), 0.0)
        inter = iw * ih
        union = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
        if inter / union > ovmax:
          ovmax, jmax = inter / union, j
      if ovmax > 0.5:
        if not r["difficult"][jmax]:
          if not r["det"][jmax]:
            tp[rank] = 1
            r["det"][jmax] = True
          else:
            fp[rank] = 1
      else:
        fp[rank] = 1
    if npos == 0:
      aps.append(np.nan)
      continue
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
      ap += (np.max(prec[rec >= t]) if np.sum(rec >= t) > 0 else 0.0) / 11.0
    aps.append(ap)
  return aps


def test_voc07_agrees_with_reference_loop():
  rng = np.random.default_rng(1)
  n, g, k, classes = 8, 7, 15, 4
  xy = rng.uniform(0, 150, (n, g, 2))
  gt_boxes = np.concatenate([xy, xy + rng.uniform(10, 80, (n, g, 2))], -1).astype(np.float32)
  gt_labels = rng.integers(0, classes - 1, (n, g))  # the last class never has ground truth
  gt_valid = rng.uniform(size=(n, g)) < 0.7
  gt_difficult = rng.uniform(size=(n, g)) < 0.2
  source = rng.integers(0, g, (n, k))
  pred_boxes = (np.take_along_axis(gt_boxes, source[..., None], 1)
                + rng.normal(scale=8.0, size=(n, k, 4))).astype(np.float32)
  pred_labels = np.where(rng.uniform(size=(n, k)) < 0.8,
                         np.take_along_axis(gt_labels, source, 1), rng.integers(0, classes, (n, k)))
  pred_scores = np.round(rng.uniform(size=(n, k)), 1)  # many ties
  pred_valid = rng.uniform(size=(n, k)) < 0.9
  args = (pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels, gt_valid)
  ours = voc07_detection_metrics(*args, num_classes=classes, gt_difficult=gt_difficult)
  ref = reference_voc07(*args, gt_difficult, classes)
  np.testing.assert_allclose(ours["AP"], ref, rtol=1e-12, equal_nan=True)
  assert np.isnan(ref[-1]) and all(0.05 < a < 1.0 for a in ref[:-1])
  assert ours["mAP"] == pytest.approx(np.nanmean(ref))
