"""Paper baseline: ResNet-56 on CIFAR-10, 6.97% test error (He et al. 2016, Table 6)."""
from research.sweeps import Baseline, Experiment, SlurmResources


def get_experiment() -> Experiment:
  return Experiment(
      name="resnet56_cifar10",
      config="resnet56_cifar10",
      seeds=(0, 1, 2),
      metric="eval/accuracy",
      baseline=Baseline(
          metric="eval/accuracy", expected=1 - 0.0697, tolerance=0.004, note="6.97% test error",
          source="He, Zhang, Ren, Sun 2016, Deep residual learning for image recognition, Table 6"),
      slurm=SlurmResources(gpus_per_node=1, cpus_per_task=8, time_min=24 * 60))
