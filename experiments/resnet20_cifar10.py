"""Paper baseline: ResNet-20 on CIFAR-10, 8.75% test error (He et al. 2016, Table 6).

The config configs/resnet20_cifar10.py is the paper's recipe (64k iterations at batch 128,
lr 0.1 divided by 10 at 32k and 48k, weight decay 1e-4, flip + 4-pixel-padding crops).
"""
from research.sweeps import Baseline, Experiment, SlurmResources


def get_experiment() -> Experiment:
  return Experiment(
      name="resnet20_cifar10",
      config="resnet20_cifar10",
      seeds=(0, 1, 2),
      metric="eval/accuracy",
      baseline=Baseline(
          metric="eval/accuracy", expected=1 - 0.0875, tolerance=0.004, note="8.75% test error",
          source="He, Zhang, Ren, Sun 2016, Deep residual learning for image recognition, Table 6"),
      slurm=SlurmResources(gpus_per_node=1, cpus_per_task=8, time_min=12 * 60))
