"""A user's model, registered under the name a config gives as config.model.name."""
import flax.linen as nn
import jax.numpy as jnp

from research.core.registry import MODELS


@MODELS.register("user_mlp")
class UserMLP(nn.Module):
  """images float [N, H, W, C] -> logits [N, num_classes], through one hidden layer."""
  num_classes: int
  hidden: int = 32

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = nn.relu(nn.Dense(self.hidden)(images.reshape(images.shape[0], -1)))
    return nn.Dense(self.num_classes)(x)
