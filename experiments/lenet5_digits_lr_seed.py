"""LeNet-5 on the built-in `digits` dataset: learning rate x seed, 4 short trials.

    research-sweep experiments/lenet5_digits_lr_seed.py
    research-report experiments/lenet5_digits_lr_seed.py

150 steps at batch 128 (about 13 epochs) instead of the config's 400, evaluated every 50 steps
so the report's learning curves have several points.
"""
from research.sweeps import Experiment, grid


def get_experiment() -> Experiment:
  return Experiment(
      name="lenet5_digits_lr_seed",
      config="lenet5_digits",
      overrides={"num_train_steps": 150, "log_every_steps": 10, "eval_every_steps": 50,
                 "checkpoint_every_steps": 50},
      sweep=[grid("optimizer.learning_rate", [0.01, 0.05])],
      seeds=(0, 1),
      metric="eval/accuracy",
      description="How much does the learning rate matter for a short LeNet-5 run, beyond seed noise?")
