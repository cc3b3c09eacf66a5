"""Reference baseline: Faster R-CNN ResNet-50 FPN on COCO val2017, box AP 37.0.

The number is torchvision's documented box AP (mAP@[.5:.95], pycocotools) of
fasterrcnn_resnet50_fpn (COCO_V1 weights), trained with torchvision's references/detection recipe
that configs/faster_rcnn_r50_fpn_coco.py follows (26 epochs, 8 GPUs x 2 images). Needs coco/2017
in data_dir and an ImageNet ResNet-50 run for init_from.
"""
from research.sweeps import Baseline, Experiment, SlurmResources


def get_experiment() -> Experiment:
  return Experiment(
      name="faster_rcnn_r50_fpn_coco",
      config="faster_rcnn_r50_fpn_coco",
      metric="eval/mAP",
      baseline=Baseline(
          metric="eval/mAP", expected=0.370, tolerance=0.005, note="box AP 37.0 on val2017",
          source="torchvision.models.detection.fasterrcnn_resnet50_fpn, COCO_V1 weights, documented box AP"),
      slurm=SlurmResources(nodes=1, gpus_per_node=8, cpus_per_task=16, time_min=48 * 60, mem_gb=256))
