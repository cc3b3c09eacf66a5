"""Detection metrics: COCO mAP through pycocotools, and PASCAL VOC07 11-point AP.

Inputs are host numpy arrays padded to static sizes, as the eval step produces them, for N
images with up to K detections and G ground-truth boxes each:
  pred_boxes [N, K, 4], pred_scores [N, K], pred_labels int [N, K], pred_valid bool [N, K];
  gt_boxes [N, G, 4], gt_labels int [N, G], gt_valid bool [N, G].
Boxes are [x1, y1, x2, y2] in absolute pixels (continuous coordinates, width = x2 - x1), the
same convention as research.ops.boxes; COCO's [x, y, w, h] is produced here. Labels are
category ids, used as they are (whether 0 means background is the caller's business: a category
without ground truth is left out of the means).
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Optional

import numpy as np

COCO_STAT_NAMES = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                   "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
  """[..., 4] [x1, y1, x2, y2] -> [x, y, w, h] (COCO's bbox layout)."""
  return np.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)


def coco_detection_metrics(pred_boxes: np.ndarray, pred_scores: np.ndarray,
                           pred_labels: np.ndarray, pred_valid: np.ndarray,
                           gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_valid: np.ndarray,
                           gt_crowd: Optional[np.ndarray] = None,
                           gt_areas: Optional[np.ndarray] = None) -> Dict[str, float]:
  """COCO box metrics (pycocotools COCOeval 'bbox'): mAP@[.5:.95], AP50, AP75 and the rest.

  Shapes as in the module docstring; gt_crowd: optional bool [N, G] (COCO iscrowd, such boxes
  are ignored, not missed); gt_areas: optional [N, G] areas for the small/medium/large ranges
  (COCO uses the mask area; default box w * h). Returns the 12 numbers of
  COCOeval.summarize() keyed by COCO_STAT_NAMES; pycocotools reports -1 where no ground
  truth makes a number undefined.
  """
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  num_images = gt_boxes.shape[0]
  gt_xywh = _xyxy_to_xywh(np.asarray(gt_boxes, np.float64))
  pred_xywh = _xyxy_to_xywh(np.asarray(pred_boxes, np.float64))
  if gt_areas is None:
    gt_areas = gt_xywh[..., 2] * gt_xywh[..., 3]
  if gt_crowd is None:
    gt_crowd = np.zeros(gt_labels.shape, bool)
  gt_anns: List[dict] = []
  dt_anns: List[dict] = []
  for image in range(num_images):
    for g in np.flatnonzero(gt_valid[image]):
      gt_anns.append({"id": len(gt_anns) + 1, "image_id": image + 1,
                      "category_id": int(gt_labels[image, g]),
                      "bbox": gt_xywh[image, g].tolist(), "area": float(gt_areas[image, g]),
                      "iscrowd": int(gt_crowd[image, g])})
    for k in np.flatnonzero(pred_valid[image]):
      bbox = pred_xywh[image, k]
      dt_anns.append({"id": len(dt_anns) + 1, "image_id": image + 1,
                      "category_id": int(pred_labels[image, k]),
                      "bbox": bbox.tolist(), "area": float(bbox[2] * bbox[3]),
                      "score": float(pred_scores[image, k]), "iscrowd": 0})
  category_ids = sorted({a["category_id"] for a in gt_anns + dt_anns})
  images = [{"id": image + 1} for image in range(num_images)]
  categories = [{"id": c} for c in category_ids]

  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = {"images": images, "categories": categories, "annotations": gt_anns}
    coco_gt.createIndex()
    coco_dt = COCO()
    coco_dt.dataset = {"images": images, "categories": categories, "annotations": dt_anns}
    coco_dt.createIndex()
    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return {name: float(value) for name, value in zip(COCO_STAT_NAMES, evaluator.stats)}


def voc07_11point_ap(precision: np.ndarray, recall: np.ndarray) -> float:
  """VOC2007 AP: mean over t in {0, 0.1, ..., 1} of max precision at recall >= t (0 if none).

  precision, recall: [D] along detections in descending score order.
  """
  points = np.linspace(0.0, 1.0, 11)
  reached = recall[None, :] >= points[:, None]  # [11, D]
  best = np.max(np.where(reached, precision[None, :], 0.0), axis=1, initial=0.0)
  return float(np.mean(best))


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU [P, Q] of [P, 4] and [Q, 4] [x1, y1, x2, y2] boxes, no +1 term."""
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  wh = np.clip(rb - lt, 0.0, None)
  inter = wh[..., 0] * wh[..., 1]
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, np.finfo(np.float64).tiny)


def voc07_detection_metrics(pred_boxes: np.ndarray, pred_scores: np.ndarray,
                            pred_labels: np.ndarray, pred_valid: np.ndarray,
                            gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_valid: np.ndarray,
                            num_classes: int, gt_difficult: Optional[np.ndarray] = None,
                            iou_threshold: float = 0.5) -> Dict[str, object]:
  """PASCAL VOC2007 11-point AP per class and its mean (the VOC07 devkit's rule).

  Shapes as in the module docstring; gt_difficult: optional bool [N, G]. Per class, detections
  in descending score order (stable on ties) are matched to the ground truth box of their image
  with the highest IoU; IoU > iou_threshold with a not yet detected, non-difficult box is a true
  positive, with an already detected one a false positive, with a difficult one neither; lower
  IoU is a false positive. Difficult boxes do not count as positives. IoU has no +1 term (the
  devkit adds 1 to widths of inclusive integer pixel boxes; with continuous coordinates
  x1 = xmin - 1, x2 = xmax the two agree). Returns {"AP": [num_classes] floats, NaN for a class
  without non-difficult ground truth, "mAP": the mean over the other classes (NaN if none)}.
  """
  if gt_difficult is None:
    gt_difficult = np.zeros(gt_labels.shape, bool)
  num_images, max_gt = gt_labels.shape
  aps = np.full((num_classes,), np.nan)
  for c in range(num_classes):
    gt_mask = gt_valid & (gt_labels == c)
    num_positives = int(np.sum(gt_mask & ~gt_difficult))
    if num_positives == 0:
      continue
    image_of, slot_of = np.nonzero(pred_valid & (pred_labels == c))
    order = np.argsort(-pred_scores[image_of, slot_of], kind="stable")
    image_of, slot_of = image_of[order], slot_of[order]
    best_iou = np.zeros(image_of.shape)
    best_gt = np.zeros(image_of.shape, np.int64)
    for image in np.unique(image_of):
      dets = np.flatnonzero(image_of == image)
      gts = np.flatnonzero(gt_mask[image])
      if gts.size == 0:
        continue
      iou = _pairwise_iou(pred_boxes[image, slot_of[dets]].astype(np.float64),
                          gt_boxes[image, gts].astype(np.float64))
      best_iou[dets] = np.max(iou, axis=1)
      best_gt[dets] = gts[np.argmax(iou, axis=1)]
    hit = best_iou > iou_threshold
    # A hit is a true positive only for the first (highest-scoring) detection of its box;
    # later ones are duplicates, i.e. false positives. Hits on difficult boxes are then
    # dropped: neither true nor false positives.
    hits = np.flatnonzero(hit)
    _, first = np.unique(image_of[hits] * max_gt + best_gt[hits], return_index=True)
    tp = np.zeros(image_of.shape, bool)
    tp[hits[first]] = True
    tp_cum = np.cumsum(tp[~(hit & gt_difficult[image_of, best_gt])])
    recall = tp_cum / num_positives
    precision = tp_cum / np.arange(1, tp_cum.size + 1)
    aps[c] = voc07_11point_ap(precision, recall)
  known = ~np.isnan(aps)
  return {"AP": aps.tolist(), "mAP": float(np.mean(aps[known])) if known.any() else float("nan")}
