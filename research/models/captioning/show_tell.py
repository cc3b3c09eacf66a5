"""Show and Tell (Vinyals et al. 2015; Karpathy's neuraltalk): a CNN encoder whose image embedding
is the first input of an LSTM language model over the caption's words.

Sequence layout, for captions tokens int32 [N, L] = <bos> w_1 .. w_n <eos> <pad>... (ids as
research.data.preprocess.Vocabulary):
  LSTM inputs   x_{-1} = W_i CNN(image),  x_t = W_e tokens[:, t]  for t = 0 .. L-2
  outputs       logits[:, t] (after input x_t) predicts tokens[:, t + 1]
so `__call__` returns logits [N, L - 1, V] aligned with tokens[:, 1:]; the output after the
image input is not scored (as in the paper). `start` feeds the image and returns the decoding
state (the LSTM carry) that decoding begins from; `decode_step` then consumes one token per step.
`CaptionDecoder` is the language model alone, on image features (for models sharing a backbone).

`image_every_step=True` also adds the image embedding to every word input, x_t = W_e tokens[:, t]
+ W_i CNN(image) (the decoding state then carries the embedding along). The paper found this
worse with a pretrained CNN (it overfits); with a CNN trained from scratch it is what lets the
image reach late words at all: on `shapes`, feeding the image only first left the colour of the
first named object at chance (13% over 8 colours) after 1,000 steps, while feeding it every step
reached 64% after 600.

Encoder: a registered backbone (`small_cnn`, `resnet18`, `resnet50`, ...) whose last stage is
global-average pooled. It shares the model's top-level scope (`nn.share_scope`), so its
parameters have the same paths as in the classifier of the same name (`conv1`, `layer1_0`, ...
for the ResNets) and `config.init_from` can load an ImageNet classification run; the decoder's
parameters are under DECODER_PARAMS, and FREEZE_ENCODER (a regex for config.optimizer.freeze)
matches every other parameter. `encoder_train=False` also keeps the encoder's BatchNorm in
inference mode (running statistics, not updated), as for a frozen pretrained CNN.
"""
from __future__ import annotations

from typing import Any, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.core.registry import MODELS
from research.models.captioning.lstm import LSTM, Carry
from research.models.segmentation.encoder import build_backbone, deepest_stage

DECODER_PARAMS = ("image_embed", "word_embed", "lstm", "word_logits")
FREEZE_ENCODER = r"^(?!(" + "|".join(DECODER_PARAMS) + r")/)"
State = Union[Carry, Tuple[Carry, jax.Array]]  # decoding state: the carry (and the image embedding)


class CaptionDecoder(nn.Module):
  """The language model alone: image features [N, D] (a backbone's pooled last stage) and tokens
  int32 [N, L] (or [N, K, L]) -> logits float32 [..., L - 1, V], as `ShowAndTell` (module docstring).

  Parameters: DECODER_PARAMS. `ShowAndTell` shares its scope, so they keep their paths there; a
  multi-task model runs it on its shared backbone's features."""

  vocab_size: int
  embed_dim: int = 256
  hidden_size: int = 512
  num_layers: int = 1
  dropout: float = 0.5
  image_every_step: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    self.image_embed = nn.Dense(self.embed_dim, dtype=self.dtype)
    self.word_embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)
    self.lstm = LSTM(self.hidden_size, self.num_layers, self.dropout, self.dtype)
    self.word_logits = nn.Dense(self.vocab_size, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)

  def start(self, features: jax.Array) -> State:
    """The decoding state after the image input (inference): the LSTM carry, with the image
    embedding [N, embed_dim] when `image_every_step`."""
    x = self.image_embed(features)
    carry, _ = self.lstm.step(self.lstm.initial_carry(x.shape[0]), x)
    return (carry, x) if self.image_every_step else carry

  def decode_step(self, state: State, tokens: jax.Array) -> Tuple[jax.Array, State]:
    """(state, previous tokens int32 [B]) -> (next-token logits float32 [B, V], state)."""
    carry, image = state if self.image_every_step else (state, None)
    x = self.word_embed(tokens)
    carry, h = self.lstm.step(carry, x if image is None else x + image.astype(x.dtype))
    return self.word_logits(h).astype(jnp.float32), (carry if image is None else (carry, image))

  def __call__(self, features: jax.Array, tokens: jax.Array, train: bool = False) -> jax.Array:
    """Teacher forcing: logits[..., t, :] predicting tokens[..., t + 1]."""
    image = self.image_embed(features)
    lead = tokens.shape[:-1]
    image = jnp.broadcast_to(image.reshape((image.shape[0],) + (1,) * (len(lead) - 1) + image.shape[1:]),
                             lead + image.shape[1:]).reshape(-1, image.shape[-1])
    words = self.word_embed(tokens.reshape(-1, tokens.shape[-1])[:, :-1])
    if self.image_every_step:
      words = words + image[:, None].astype(words.dtype)
    xs = self.drop(jnp.concatenate([image[:, None].astype(words.dtype), words], 1), deterministic=not train)
    _, hs = self.lstm(self.lstm.initial_carry(xs.shape[0]), xs, train)
    logits = self.word_logits(self.drop(hs[:, 1:], deterministic=not train))
    return logits.astype(jnp.float32).reshape(lead + logits.shape[1:])


@MODELS.register("show_tell")
class ShowAndTell(nn.Module):
  """images [N, H, W, 3], tokens int32 [N, L] (or [N, K, L]) -> logits float32 [N, L - 1, V]:
  a registered backbone + `CaptionDecoder`, both sharing this module's scope."""

  vocab_size: int
  backbone: str = "small_cnn"
  embed_dim: int = 256
  hidden_size: int = 512
  num_layers: int = 1
  dropout: float = 0.5
  image_every_step: bool = False
  encoder_train: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    self.encoder = build_backbone(self.backbone, self.dtype)
    nn.share_scope(self, self.encoder)
    self.decoder = CaptionDecoder(self.vocab_size, self.embed_dim, self.hidden_size, self.num_layers,
                                  self.dropout, self.image_every_step, self.dtype)
    nn.share_scope(self, self.decoder)

  def pooled_features(self, images: jax.Array, train: bool = False) -> jax.Array:
    """images [N, H, W, 3] -> [N, C]: the encoder's last stage, average pooled."""
    feats = self.encoder(images, train and self.encoder_train)
    return feats[deepest_stage(feats)].astype(jnp.float32).mean(axis=(1, 2))

  def start(self, images: jax.Array) -> State:
    """The decoding state after the image input (inference): where decoding starts."""
    return self.decoder.start(self.pooled_features(images))

  def decode_step(self, state: State, tokens: jax.Array) -> Tuple[jax.Array, State]:
    """(state, previous tokens int32 [B]) -> (next-token logits float32 [B, V], state)."""
    return self.decoder.decode_step(state, tokens)

  def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False) -> jax.Array:
    """Teacher forcing. tokens [N, L] or [N, K, L] (K captions per image) -> logits
    [..., L - 1, V], logits[..., t, :] predicting tokens[..., t + 1]."""
    return self.decoder(self.pooled_features(images, train), tokens, train)
