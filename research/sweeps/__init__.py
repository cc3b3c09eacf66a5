"""Experiments and sweeps: define them in Python (experiments/*.py), run them with
research-sweep (locally, on SLURM, or as an Optuna search), read them with research-report."""
from research.sweeps.experiment import (Baseline, Experiment, ExperimentError, SlurmResources, Trial,
                                        choice, grid, load_experiment, loguniform, randint,
                                        random_axis, uniform, zipped)

__all__ = ["Baseline", "Experiment", "ExperimentError", "SlurmResources", "Trial", "choice", "grid",
           "load_experiment", "loguniform", "randint", "random_axis", "uniform", "zipped"]
