"""DCGAN on CIFAR-10 (Radford et al. 2016 architecture and optimizer).

Expected: FID about 29 with 10k samples (the DCGAN CIFAR-10 figure the project's design notes
list as the baseline; FID is defined by Heusel et al. 2017). That FID uses Inception-v3 pool features, which
cannot be downloaded here: the framework's `eval/frechet_distance` uses the features of a classifier
it trains itself (config.task.classifier_workdir), so the two numbers are not comparable until an
Inception feature extractor is provided as that classifier.
"""
from research.sweeps import Baseline, Experiment, SlurmResources


def get_experiment() -> Experiment:
  return Experiment(
      name="dcgan_cifar10",
      config="dcgan_cifar10",
      seeds=(0,),
      metric="eval/frechet_distance",
      baseline=Baseline(
          metric="eval/frechet_distance", expected=29.0, tolerance=3.0,
          note="FID about 29 (10k samples, Inception-v3 features; not comparable with other features)",
          source="Radford, Metz, Chintala 2016 (architecture, optimizer); FID of Heusel et al. 2017; "
                 "figure from the project's design notes (DESIGN.md section 5)"),
      slurm=SlurmResources(gpus_per_node=1, cpus_per_task=8, time_min=8 * 60))
