"""Pooling layers with a fast path for non-overlapping windows (research.models.cpu_dispatch.pool_reshape).

XLA:CPU's gradient of a windowed max (select-and-scatter) is about 2x slower than the same
reduction written as a reshape; for windows equal to strides with VALID padding (LeNet, VGG,
AlexNet-style 2x2 pools) `max_pool` reshapes, otherwise it is `flax.linen.max_pool`, on CPU with a
custom gradient for overlapping windows (`_tap_max`: ResNet's 3x3/2 stem pool at batch 8 x 224,
forward and backward 124 -> 36 ms; its taps read from x's strided phases, with no padded copy of
x, and its gradient assembled per phase). The reshape
form's gradient is a custom_vjp that sends each window's gradient to its first maximum in
row-major order, as select-and-scatter and torch do (autodiff of jnp.max would split it evenly
among ties, in three passes instead of one: LeNet-5's step 7.1 -> 5.9 ms on 2 cores).
Under the "native" family on CPU, f32 (cpu_dispatch.native_f32), that max pool and its
gradient are research.models.native_cpu's kernels, one pass over x each (the reshape path's
gradient makes one masked pass per window tap), with the same bits as the reshape path for inputs
without NaNs. With NaNs they follow lax.max -- a window holding one pools to NaN and gets no
gradient -- as jnp.max does on small arrays; XLA:CPU runs jnp.max on YNNPACK at LeNet's sizes,
which skips NaNs. The gradient kernel returns `_window_max_bwd`'s piece for each window tap, and
they are stacked into dx the same way, so XLA still sums the preceding convolution's bias gradient
piece by piece (summing one assembled dx rounds differently: LeNet-5's default job then ended at
another accuracy). LeNet-5's step: 5.8 -> 5.2 ms on 2 cores, the same parameters after 400 steps.
`max_pool_ceil` is torch's ceil-mode max pool (GoogLeNet's pools), `adaptive_avg_pool` torch's
AdaptiveAvgPool2d (the VGG/AlexNet classifiers' input).

The pools are plain functions, so flax's capture_intermediates does not see them; models pass each
pooling stage's output through `sow_stage(self, name, y)`, which stores it in the 'intermediates'
collection only when the caller asks for it (research-inspect) and changes no value or parameter.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.models import cpu_dispatch, manual_axes


def sow_stage(module: nn.Module, name: str, y: jax.Array) -> jax.Array:
  """y, unchanged; also sown as intermediates/<name> of `module` when that collection is mutable."""
  module.sow("intermediates", name, y)
  return y


@jax.custom_vjp
def _window_max(x: jax.Array) -> jax.Array:
  """Max over axes 2 and 4 of x [N, H', wh, W', ww, C] -> [N, H', W', C]."""
  return jnp.max(x, axis=(2, 4))


def _window_max_fwd(x: jax.Array):
  y = _window_max(x)
  return y, (x, y)


def _stack_taps(taps: Sequence[jax.Array], window: tuple[int, int]) -> jax.Array:
  """The gradient pieces of a window's taps, [N, H', W', C] each in row-major order, as
  [N, H', wh, W', ww, C]."""
  wh, ww = window
  rows = [jnp.stack(taps[a * ww:(a + 1) * ww], axis=3) for a in range(wh)]  # [N, H', W', ww, C] each
  return jnp.stack(rows, axis=2)


def _window_max_bwd(residuals, dy: jax.Array):
  """The gradient goes to the first maximum of each window in row-major order (torch's rule):
  one pass over x, where autodiff of jnp.max counts ties and divides (three)."""
  x, y = residuals
  wh, ww = x.shape[2], x.shape[4]
  taken = jnp.zeros(y.shape, bool)
  taps = []
  for a in range(wh):
    for b in range(ww):
      first = (x[:, :, a, :, b] == y) & ~taken
      taken = taken | first
      taps.append(jnp.where(first, dy, jnp.zeros((), dy.dtype)))
  return (_stack_taps(taps, (wh, ww)),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _native_window_max(x: jax.Array, window: tuple[int, int]) -> jax.Array:
  """`_window_max` on research.models.native_cpu's kernels: x [N, H' wh, W' ww, C] f32 (cropped to
  whole windows) -> [N, H', W', C], the same values and gradient, bit for bit (without NaNs: see
  the module docstring)."""
  return cpu_dispatch.native_module().max_pool(x, window)


def _native_window_max_fwd(x: jax.Array, window: tuple[int, int]):
  y = _native_window_max(x, window)
  return y, (x, y)


def _native_window_max_bwd(window: tuple[int, int], residuals, dy: jax.Array):
  """One native pass computes the taps' pieces of `_window_max_bwd`, stacked the same way: XLA then
  sums the preceding convolution's bias gradient piece by piece as on the reshape path (a sum over
  one assembled dx rounds differently, and LeNet-5's default job ended at another accuracy)."""
  x, y = residuals
  dx = _stack_taps(cpu_dispatch.native_module().max_pool_grad(x, y, dy, window), window).reshape(x.shape)
  return (manual_axes.match_varying(dx, x),)


_native_window_max.defvjp(_native_window_max_fwd, _native_window_max_bwd)


Pads = tuple[tuple[int, int], ...]


def _out_size(size: int, window: int, stride: int, pads: tuple[int, int]) -> int:
  return (size + pads[0] + pads[1] - window) // stride + 1


def _tap_offsets(window: tuple[int, int], strides: tuple[int, int], pads: Pads) -> list[tuple[tuple[int, int], ...]]:
  """For each tap (a, b) of the window, row-major: ((qa, ra), (qb, rb)) with a - top = qa * sh + ra,
  b - left = qb * sw + rb (0 <= r < stride). Output pixel (i, j)'s tap reads x (sh (i + qa) + ra,
  sw (j + qb) + rb): pixel (i + qa, j + qb) of x's phase x[:, ra::sh, rb::sw]."""
  return [(divmod(a - pads[0][0], strides[0]), divmod(b - pads[1][0], strides[1]))
          for a in range(window[0]) for b in range(window[1])]


def _shift(v: jax.Array, shift: tuple[int, int], size: tuple[int, int], fill: float) -> jax.Array:
  """out [N, size, C] with out (i, j) = v (i + shift[0], j + shift[1]), `fill` past v's edges (a
  pad, negative where it crops)."""
  config = [(0, 0, 0)] + [(-q, s + q - n, 0) for q, s, n in zip(shift, size, v.shape[1:3])] + [(0, 0, 0)]
  return jax.lax.pad(v, jnp.array(fill, v.dtype), config)


def _taps(x: jax.Array, window: tuple[int, int], strides: tuple[int, int], pads: Pads) -> list[jax.Array]:
  """The window's taps of x [N, H, W, C] padded with -inf, row-major, [N, H', W', C] each: tap (a, b)
  is the phase x[:, ra::sh, rb::sw] shifted by (qa, qb) output pixels (`_tap_offsets`), so no
  padded copy of x is written (ResNet-50's stem pool, batch 8: BatchNorm, ReLU and the pad of the
  8 x 114 x 114 x 64 input made one fusion of 12 ms; its padded gradient nine of 1.3-2.8 ms)."""
  size = tuple(_out_size(n, k, s, p) for n, k, s, p in zip(x.shape[1:3], window, strides, pads))
  return [_shift(x[:, ra::strides[0], rb::strides[1]], (qa, qb), size, -jnp.inf)
          for (qa, ra), (qb, rb) in _tap_offsets(window, strides, pads)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _tap_max(x: jax.Array, window: tuple[int, int], strides: tuple[int, int], pads: Pads) -> jax.Array:
  """Max over (overlapping) windows of x [N, H, W, C] padded with -inf, as nn.max_pool: the max of
  the window's taps, one fused loop (3x3/2 at 8 x 112x112x64: 2-4 ms against reduce-window's 8-9);
  the custom gradient is `_tap_max_bwd`."""
  return functools.reduce(jnp.maximum, _taps(x, window, strides, pads))


def _tap_max_fwd(x, window, strides, pads):
  y = _tap_max(x, window, strides, pads)
  return y, (x, y)


def _tap_max_bwd(window, strides, pads, residuals, dy):
  """Each window's gradient to its first maximum in row-major order (select-and-scatter's and
  torch's rule). Each tap's piece is shifted back onto its phase of x and summed there, in tap
  order; the phases are interleaved into dx in one pass. (XLA:CPU's select-and-scatter pairs
  values with an iota of indices, several passes over the padded input.)"""
  x, y = residuals
  (sh, sw), (h, w) = strides, x.shape[1:3]
  offsets, taps = _tap_offsets(window, strides, pads), _taps(x, window, strides, pads)
  # Each window's first maximum, as the index of its tap (len(taps): none, a NaN window), computed
  # once at the output's size: every tap's piece below compares with it.
  first = jnp.full(y.shape, len(taps), jnp.int8 if len(taps) < 128 else jnp.int32)
  for k in reversed(range(len(taps))):
    first = jnp.where(taps[k] == y, jnp.asarray(k, first.dtype), first)
  zero = jnp.zeros((), dy.dtype)
  phases: dict[tuple[int, int], jax.Array] = {}
  for k, ((qa, ra), (qb, rb)) in enumerate(offsets):
    # Back onto phase (ra, rb) of x, whose pixel (i + qa, j + qb) the tap read at output (i, j).
    shape = (-(-(h - ra) // sh), -(-(w - rb) // sw))
    piece = _shift(jnp.where(first == k, dy, zero), (-qa, -qb), shape, 0.0)
    phases[ra, rb] = piece if (ra, rb) not in phases else phases[ra, rb] + piece
  # dx [:, r::sh, s::sw] = phase (r, s): each phase padded to ceil(H / sh) x ceil(W / sw), the
  # phases stacked as [N, H'', sh, W'', sw, C], reshaped and cut to H x W.
  rows, cols = -(-h // sh), -(-w // sw)
  def full(r: int, s: int) -> jax.Array:
    phase = phases.get((r, s))
    if phase is None:  # a phase no tap reads (windows narrower than strides)
      return jnp.zeros((x.shape[0], rows, cols, x.shape[3]), dy.dtype)
    return _shift(phase, (0, 0), (rows, cols), 0.0)
  stacked = jnp.stack([jnp.stack([full(r, s) for s in range(sw)], axis=3) for r in range(sh)], axis=2)
  dx = stacked.reshape(x.shape[0], rows * sh, cols * sw, x.shape[3])[:, :h, :w]
  return (dx,)


_tap_max.defvjp(_tap_max_fwd, _tap_max_bwd)


PaddingLike = str | Sequence[tuple[int, int]]


def _pool(x: jax.Array, window: Sequence[int], strides: Sequence[int] | None, padding: PaddingLike,
          reduce: Callable[..., jax.Array], fallback: Callable[..., jax.Array],
          native: Callable[..., jax.Array] | None = None) -> jax.Array:
  """The pool: reshaped when cpu_dispatch.pool_reshape says so -- `native(x cropped to whole windows,
  window)` where given and cpu_dispatch.native_f32 holds, else `reduce` over the window axes --
  otherwise `fallback` (flax's signature)."""
  strides = tuple(strides or window)
  wh, ww = window
  if cpu_dispatch.pool_reshape(window, strides, padding):
    n, h, w, c = x.shape
    ho, wo = h // wh, w // ww
    x = x[:, :ho * wh, :wo * ww]
    if native is not None and x.size and cpu_dispatch.native_f32(x.dtype):
      return native(x, (wh, ww))
    return reduce(x.reshape(n, ho, wh, wo, ww, c), axis=(2, 4))
  return fallback(x, tuple(window), strides=strides, padding=padding)


def _max_pool_any(x: jax.Array, window: tuple[int, int], strides: tuple[int, int], padding: PaddingLike) -> jax.Array:
  """nn.max_pool, with the tap gradient (`_tap_max`) where cpu_dispatch.max_pool_taps says so."""
  if not cpu_dispatch.max_pool_taps(window, strides):
    return nn.max_pool(x, window, strides=strides, padding=padding)
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x.shape[1:3], window, strides, padding)
  return _tap_max(x, tuple(window), tuple(strides), tuple(tuple(p) for p in padding))


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int] | None = None,
             padding: PaddingLike = "VALID") -> jax.Array:
  """x [N, H, W, C] -> [N, H', W', C], as nn.max_pool(x, window, strides, padding) (padding: "VALID",
  "SAME" or ((top, bottom), (left, right)))."""
  return _pool(x, window, strides, padding, lambda v, axis: _window_max(v), _max_pool_any, _native_window_max)


def avg_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int] | None = None,
             padding: str = "VALID") -> jax.Array:
  """x [N, H, W, C] -> [N, H', W', C], as nn.avg_pool (same fast path as max_pool)."""
  return _pool(x, window, strides, padding, jnp.mean, nn.avg_pool)


def max_pool_ceil(x: jnp.ndarray, window: int, stride: int, padding: int = 0) -> jnp.ndarray:
  """torch.nn.MaxPool2d(window, stride, padding, ceil_mode=True) on x [N, H, W, C] -> [N, H', W', C].

  H' = ceil((H + 2 padding - window) / stride) + 1, minus one if the last window would start in
  the bottom padding (torch's rule); windows reaching past the input see -inf, so they take the
  maximum over their valid part.
  """
  pads = []
  for size in x.shape[1:3]:
    out = -(-(size + 2 * padding - window) // stride) + 1
    if (out - 1) * stride >= size + padding:
      out -= 1
    if out < 1:
      raise ValueError(f"max pool {window}/{stride} (padding {padding}, ceil mode) of a {size}-pixel side "
                       f"has no output; e.g. GoogLeNet needs images of at least 15x15")
    pads.append((padding, (out - 1) * stride + window - size - padding))
  return max_pool(x, (window, window), (stride, stride), pads)


def adaptive_avg_pool(x: jnp.ndarray, size: int) -> jnp.ndarray:
  """torch.nn.AdaptiveAvgPool2d(size) on NHWC: bin i covers [floor(i H / s), ceil((i + 1) H / s))."""
  n, h, w, c = x.shape
  if (h, w) == (size, size):
    return x
  rows = []
  for i in range(size):
    r0, r1 = (i * h) // size, -(-((i + 1) * h) // size)
    cols = []
    for j in range(size):
      c0, c1 = (j * w) // size, -(-((j + 1) * w) // size)
      cols.append(x[:, r0:r1, c0:c1].mean(axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)
