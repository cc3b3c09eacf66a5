"""Paper baseline: Faster R-CNN VGG-16 on PASCAL VOC 2007 test, 69.9 mAP (VOC07 11-point AP).

Ren, He, Girshick, Sun 2015, Faster R-CNN, Table 3: RPN + VGG-16 with shared features, trained on
VOC 2007 trainval ("07"), 300 proposals at test time: 69.9% mAP. (73.2 is the "07+12" row.)
configs/faster_rcnn_vgg16_voc07.py follows the paper's recipe, with the deviations its docstring
lists. Needs voc/2007 in data_dir and an ImageNet VGG-16 run for init_from.
"""
from research.sweeps import Baseline, Experiment, SlurmResources


def get_experiment() -> Experiment:
  return Experiment(
      name="faster_rcnn_vgg16_voc07",
      config="faster_rcnn_vgg16_voc07",
      metric="eval/mAP",
      baseline=Baseline(
          metric="eval/mAP", expected=0.699, tolerance=0.01, note="69.9 mAP, VOC07 test",
          source="Ren, He, Girshick, Sun 2015, Faster R-CNN: towards real-time object detection "
                 "with region proposal networks, Table 3 (VGG-16, 07 trainval)"),
      slurm=SlurmResources(gpus_per_node=1, cpus_per_task=8, time_min=24 * 60))
