"""A user's task: classification with one more training metric, built on the task's own loss."""
from typing import Any, Dict, Tuple

import jax

from research.core.registry import TASKS
from research.tasks.base import Batch, weighted_mean
from research.tasks.classification import ClassificationTask


@TASKS.register("user_classification")
class UserClassification(ClassificationTask):
  """ClassificationTask that also reports 'top_logit', the mean of each example's largest logit."""

  def loss(self, outputs: Any, batch: Batch, example_weights: jax.Array
           ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    loss, metrics = super().loss(outputs, batch, example_weights)
    return loss, {**metrics, "top_logit": weighted_mean(outputs.max(-1), example_weights)}
