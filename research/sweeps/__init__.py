"""Experiments and sweeps: define them in Python (experiments/*.py), run them with
scripts/sweep.py (locally, on SLURM, or as an Optuna search), read them with scripts/report.py."""
from research.sweeps.experiment import (Baseline, Experiment, ExperimentError, SlurmResources, Trial,
                                        choice, grid, load_experiment, loguniform, randint,
                                        random_axis, uniform, zipped)

__all__ = ["Baseline", "Experiment", "ExperimentError", "SlurmResources", "Trial", "choice", "grid",
           "load_experiment", "loguniform", "randint", "random_axis", "uniform", "zipped"]
