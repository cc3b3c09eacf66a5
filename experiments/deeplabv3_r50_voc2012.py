"""Reference baseline: DeepLabv3 with ResNet-50 on PASCAL VOC 2012, 76.9 mIoU on VOC 2012 val.

The DeepLabv3 paper (Chen et al. 2017, arXiv:1706.05587) reports the full model (ASPP and image
pooling) with ResNet-101 only (77.21 on val at output stride 16, with multi-grid (1, 2, 4)), so the
number is a public re-implementation that trains what configs/deeplabv3_r50_voc2012.py trains:
VainF/DeepLabV3Plus-Pytorch, README 'Performance on Pascal VOC2012 Aug', row DeepLabV3-ResNet50:
mIoU 0.769 on VOC 2012 val (1,449 images), output stride 16 in training and evaluation, batch 16,
513 x 513 random crops of train_aug (10,582 images) rescaled by 0.5..2.0 and flipped, SGD momentum
0.9, weight decay 1e-4, 'poly' learning rate over 30k iterations, torchvision's ImageNet ResNet-50
with its last stage dilated (stride 16).
Where it differs from this config: learning rate 0.01 for the head and 0.001 for the backbone
(here 0.007 for all, as in the paper); evaluated on 513 x 513 centre crops of val images resized
to a shorter side of 513 (here whole images at their own size); and 0.769 is the best of the
evaluations made during training (here the last). Cross-check at output stride 8:
mmsegmentation's DeepLabV3 R-50-D8, 512 x 512, 20k iterations, VOC 2012 val 76.17 (40k: 77.68).

    research-sweep experiments/deeplabv3_r50_voc2012.py --set=init_from.workdir=RESNET50_IMAGENET_WORKDIR
"""
from research.sweeps import Baseline, Experiment, SlurmResources


def get_experiment() -> Experiment:
  return Experiment(
      name="deeplabv3_r50_voc2012",
      config="deeplabv3_r50_voc2012",
      metric="eval/miou",
      baseline=Baseline(
          metric="eval/miou", expected=0.769, tolerance=0.015, note="76.9 mIoU, VOC 2012 val",
          source="VainF/DeepLabV3Plus-Pytorch README, Performance on Pascal VOC2012 Aug, "
                 "DeepLabV3-ResNet50 (OS 16/16, batch 16, 513 crops, train_aug; val mIoU 0.769)"),
      slurm=SlurmResources(gpus_per_node=1, cpus_per_task=12, time_min=24 * 60))
