"""Reference baseline: GoogLeNet on ImageNet, 69.778% top-1 (torchvision's IMAGENET1K_V1 weights).

The number is torchvision's published accuracy of torchvision.models.googlenet on the ILSVRC-2012
validation set (single 224x224 centre crop of the image resized to 256); top-5 89.530%. Those
weights were ported from the original release rather than trained with a torchvision recipe, so
configs/googlenet_imagenet.py (the paper's recipe where it is specified, torchvision's defaults
elsewhere) aims at this number without a published run behind it.
Needs imagenet2012 prepared in data_dir, and days of GPU time: run it on a cluster
(--launcher=slurm).
"""
from research.sweeps import Baseline, Experiment, SlurmResources


def get_experiment() -> Experiment:
  return Experiment(
      name="googlenet_imagenet",
      config="googlenet_imagenet",
      metric="eval/accuracy",
      baseline=Baseline(
          metric="eval/accuracy", expected=69.778 / 100, tolerance=0.005, note="69.778% top-1",
          source="torchvision.models.googlenet, IMAGENET1K_V1 weights, documented accuracy"),
      slurm=SlurmResources(nodes=1, gpus_per_node=8, cpus_per_task=12, time_min=72 * 60, mem_gb=256))
