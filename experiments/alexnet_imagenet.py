"""Reference baseline: AlexNet on ImageNet, 56.522% top-1 (torchvision's IMAGENET1K_V1 weights).

The number is torchvision's published accuracy of torchvision.models.alexnet on the ILSVRC-2012
validation set (single 224x224 centre crop of the image resized to 256); top-5 79.066%.
Needs imagenet2012 prepared in data_dir, and days of GPU time: run it on a cluster
(--launcher=slurm).
"""
from research.sweeps import Baseline, Experiment, SlurmResources


def get_experiment() -> Experiment:
  return Experiment(
      name="alexnet_imagenet",
      config="alexnet_imagenet",
      metric="eval/accuracy",
      baseline=Baseline(
          metric="eval/accuracy", expected=56.522 / 100, tolerance=0.005, note="56.522% top-1",
          source="torchvision.models.alexnet, IMAGENET1K_V1 weights, documented accuracy"),
      slurm=SlurmResources(nodes=1, gpus_per_node=8, cpus_per_task=12, time_min=72 * 60, mem_gb=256))
