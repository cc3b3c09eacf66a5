"""Paper baseline: LeNet-5 on MNIST, 0.95% test error (LeCun et al. 1998).

    research-sweep experiments/lenet5_mnist.py   # needs MNIST prepared (README, Datasets)
"""
from research.sweeps import Baseline, Experiment, SlurmResources


def get_experiment() -> Experiment:
  return Experiment(
      name="lenet5_mnist",
      config="lenet5_mnist",
      seeds=(0, 1, 2),
      metric="eval/accuracy",
      baseline=Baseline(
          metric="eval/accuracy", expected=1 - 0.0095, tolerance=0.0015, note="0.95% test error",
          source="LeCun, Bottou, Bengio, Haffner 1998, Gradient-based learning applied to document "
                 "recognition, Fig. 9 (LeNet-5, no distortions)"),
      slurm=SlurmResources(gpus_per_node=1, cpus_per_task=8, time_min=60))
