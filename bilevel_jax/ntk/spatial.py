"""Spatial passes of the WRN kernel over (H, W) covariance maps stored with a zero border.

SAME-padded box filters (a conv's same-position covariance update: distinct taps have
independent weights), the border helpers, the conv of packed pair maps (2, H + 2, W + 2, T1, T2)
and the fence that makes XLA materialize a pass instead of fusing it into the next conv's taps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def always_true(x: jax.Array) -> jax.Array:
  """A boolean scalar that is always True but that XLA cannot constant-fold (it reads x)."""
  bits = lax.bitcast_convert_type(x.reshape(-1)[0].astype(jnp.float32), jnp.int32)
  return (bits | 1) != 0


def fenced(fn, pred: jax.Array | None):
  """Runs fn as the taken branch of a conditional that XLA cannot resolve at compile time.

  Values crossing a conditional boundary are materialized, so XLA cannot fuse the pass into its
  consumers. Without this fence XLA:CPU (which drops optimization barriers before fusion) fuses
  the cheap tail of each ReLU into all 9 taps of the next conv and recomputes it there.
  """
  if pred is None or not isinstance(pred, jax.core.Tracer):
    return fn  # eager: every op is materialized anyway

  def wrapped(*args):
    out = jax.eval_shape(fn, *args)
    zeros = lambda *_: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), out)
    return lax.cond(pred, fn, zeros, *args)

  return wrapped


def _same_pads(size: int, k: int, stride: int) -> tuple[int, int, int]:
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return out, total // 2, total - total // 2


def pad1(x: jax.Array) -> jax.Array:
  return jnp.pad(x, [(1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 2))


def box_filter(x: jax.Array, k: int, stride: int) -> jax.Array:
  """Window sums of a map stored with a one-pixel zero border.

  Args:
    x: (H + 2, W + 2, ...) map whose border is zero (the SAME padding, stored once).
    k: window size, 1 or 3.
    stride: 1 or 2.

  Returns:
    (H', W', ...) window sums over k x k (SAME, strided, not normalized), H' = ceil(H / s),
    without a border (`pad1` adds it back).
  """
  if k not in (1, 3):
    raise ValueError(f"box_filter supports kernel sizes 1 and 3, got {k}.")
  h, w = x.shape[0] - 2, x.shape[1] - 2
  oh, lo_h, _ = _same_pads(h, k, stride)
  ow, lo_w, _ = _same_pads(w, k, stride)
  taps = []
  for dh in range(k):
    for dw in range(k):
      start = (dh - lo_h + 1, dw - lo_w + 1) + (0,) * (x.ndim - 2)
      limit = (start[0] + (oh - 1) * stride + 1, start[1] + (ow - 1) * stride + 1) + x.shape[2:]
      taps.append(lax.slice(x, start, limit, (stride, stride) + (1,) * (x.ndim - 2)))
  return functools.reduce(jnp.add, taps)


def pad12(s: jax.Array) -> jax.Array:
  return jnp.pad(s, [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (s.ndim - 3))


def conv_pair(s: jax.Array, k: int, stride: int, w_var: float, b_var: float):
  """Conv of packed pair maps s (2, H + 2, W + 2, T1, T2) -> unpadded (q, t), each (H', W', T1, T2)."""
  box = box_filter(jnp.moveaxis(s, 0, -1), k, stride)  # (H', W', T1, T2, 2)
  scale = w_var / (k * k)
  q = scale * box[..., 0] + b_var
  return q, scale * box[..., 1] + q
