"""GAN generator / discriminator pairs (registered in MODELS)."""
from research.models.gan import dcgan  # noqa: F401
