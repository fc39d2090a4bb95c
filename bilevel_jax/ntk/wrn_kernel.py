"""Infinite-width NNGP and NTK of a Wide ResNet without batch norm and pooling, in JAX.

Architecture (pre-activation WRN-d, as in MixMatch and in the neural-tangents WideResnet example,
minus batch norm and the average pool):
  conv3x3 stem -> 3 groups of n = (depth - 4) / 6 blocks -> Flatten -> Dense.
  block(x) = conv3x3(relu(conv3x3_s(relu(x)))) + shortcut(x), where shortcut is the identity
  except in the first block of every group, where it is a conv with the block's stride
  (kernel size `shortcut_size`: 1 as in WRN, 3 as in the neural-tangents example).
  Groups 2 and 3 stride 2 in their first block; every conv pads SAME.

Parameterization: standard NTK (neural-tangents' stax): a conv computes
  W_std / sqrt(k * k * C_in) * conv(x, w) + b_std * b, with w, b ~ N(0, 1);
the readout is the same with fan-in H * W * C. Defaults W_std = 1, b_std = 0 match stax's
defaults, so kernels agree with `stax.Conv(...)` / `stax.Dense(...)` built with default arguments.

Why this is cheap: a Flatten readout only needs same-position covariances (distinct filter taps
have independent weights), so a pair's kernel is two (H, W) maps (NNGP q and NTK t) pushed through
3x3 box filters, strides, the ReLU arc-cosine update and residual sums. Per-input variance maps
(and their square roots) depend on one input only, so a tile of T1 x T2 pairs computes them
T1 + T2 times, not T1 * T2 times. Pair maps are laid out (H + 2, W + 2, T1, T2) with a stored
zero border (the SAME padding), so every update is a contiguous vector op over the pairs and a
conv is 9 plain slices; arccos is a float32-accurate polynomial (Abramowitz & Stegun 4.4.46,
|error| <= 2e-8): XLA:CPU's arccos (atan2) cost ~40x more per element here. Each layer runs as
the taken branch of a data-dependent conditional (`_fenced`) so XLA materializes it once instead
of fusing (and recomputing) it inside the 9 taps of the next conv. Measured on 2 CPU cores:
WRN-28 at ~35 us of CPU per entry (NNGP + NTK) in 16 x 16 tiles; see benchmarks/results/ntk_*.json.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax import lax


class WRNKernelConfig(NamedTuple):
  """Architecture and parameterization of the kernel (hashable: a static jit argument).

  Attributes:
    depth: WRN depth; (depth - 4) must be divisible by 6 (28 -> 4 blocks per group).
    w_std: weight std of every conv (stax `W_std`).
    b_std: bias std of every conv (stax `b_std`; 0 = no bias).
    readout_w_std: weight std of the Dense readout.
    readout_b_std: bias std of the Dense readout.
    shortcut_size: kernel size of the convolutional shortcuts (1 = WRN, 3 = stax example).
    activate_shortcut: if True the shortcut conv sees relu(x) (MixMatch's
      `activate_before_residual`), else the raw block input x (stax example).
  """
  depth: int = 28
  w_std: float = 1.0
  b_std: float = 0.0
  readout_w_std: float = 1.0
  readout_b_std: float = 0.0
  shortcut_size: int = 1
  activate_shortcut: bool = False

  def blocks_per_group(self) -> int:
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {self.depth}.")
    return (self.depth - 4) // 6


class Kernels(NamedTuple):
  nngp: jax.Array  # (N1, N2)
  ntk: jax.Array   # (N1, N2)


class _State(NamedTuple):
  """Kernel maps of one layer for a tile of pairs."""
  q12: jax.Array  # (H, W, T1, T2) cross covariance (NNGP map)
  t12: jax.Array  # (H, W, T1, T2) NTK map
  q1: jax.Array   # (H, W, T1) variances of the first inputs
  q2: jax.Array   # (H, W, T2) variances of the second inputs


# Abramowitz & Stegun 4.4.46: acos(a) = sqrt(1 - a) * poly(a) on [0, 1], |error| <= 2e-8.
_ACOS_COEFFS = (1.5707963050, -0.2145988016, 0.0889789874, -0.0501743046,
                0.0308918810, -0.0170881256, 0.0066700901, -0.0012624911)


def _acos_nonneg(a: jax.Array, sqrt_one_minus_a: jax.Array) -> jax.Array:
  """arccos(a) for a in [0, 1], given sqrt(1 - a)."""
  p = jnp.full_like(a, _ACOS_COEFFS[-1])
  for c in _ACOS_COEFFS[-2::-1]:
    p = p * a + c
  return sqrt_one_minus_a * p


def relu_kernel(rho: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Normalized arc-cosine kernels of ReLU at correlation rho (clipped to [-1, 1]).

  Returns (j, jdot) with E[relu(u) relu(v)] = sqrt(q1 q2) * j / (2 pi) and
  E[relu'(u) relu'(v)] = jdot / (2 pi), i.e. j = sin(theta) + (pi - theta) cos(theta),
  jdot = pi - theta, theta = arccos(rho).
  """
  rho = jnp.clip(rho, -1.0, 1.0)
  a = jnp.abs(rho)
  s_minus = jnp.sqrt(1.0 - a)
  acos_a = _acos_nonneg(a, s_minus)                            # arccos(|rho|)
  jdot = jnp.where(rho >= 0, math.pi - acos_a, acos_a)          # pi - arccos(rho)
  j = s_minus * jnp.sqrt(1.0 + a) + jdot * rho                  # sqrt(1 - rho^2) + ...
  return j, jdot


def _safe_rsqrt(q: jax.Array) -> jax.Array:
  # Zero variance (the zero border, or an all-zero padding input) gives correlation 0, not NaN.
  return jnp.where(q > 0, lax.rsqrt(jnp.maximum(q, 1e-30)), 0.0)


def _materialize(*xs: jax.Array) -> tuple[jax.Array, ...]:
  return lax.optimization_barrier(xs)


def _always_true(x: jax.Array) -> jax.Array:
  """A boolean scalar that is always True but that XLA cannot constant-fold (it reads x)."""
  bits = lax.bitcast_convert_type(x.reshape(-1)[0].astype(jnp.float32), jnp.int32)
  return (bits | 1) != 0


def _fenced(fn, pred: jax.Array | None):
  """Runs fn as the taken branch of a conditional that XLA cannot resolve at compile time.

  Values crossing a conditional boundary are materialized, so XLA cannot fuse the layer into its
  consumers. Without this fence XLA:CPU (which drops optimization barriers before fusion) fuses
  the cheap tail of each ReLU into all 9 taps of the next conv and recomputes it there, which
  made a WRN-28 tile several times slower than the sum of its layers.
  """
  if pred is None:
    return fn

  def wrapped(*args):
    out = jax.eval_shape(fn, *args)
    zeros = lambda *_: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), out)
    return lax.cond(pred, fn, zeros, *args)
  return wrapped


def _relu(s: _State) -> _State:
  # Per-input normalizers: computed on (H, W, T) and materialized, so the pair loop only multiplies.
  r1, r2, n1, n2 = _materialize(_safe_rsqrt(s.q1), _safe_rsqrt(s.q2),
                                jnp.sqrt(s.q1) * (0.5 / math.pi), jnp.sqrt(s.q2))
  rho = s.q12 * r1[..., :, None] * r2[..., None, :]
  j, jdot = relu_kernel(rho)
  q12 = (n1[..., :, None] * n2[..., None, :]) * j
  t12 = s.t12 * (jdot * (0.5 / math.pi))
  return _State(*_materialize(q12, t12, 0.5 * s.q1, 0.5 * s.q2))


def _same_pads(size: int, k: int, stride: int) -> tuple[int, int, int]:
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return out, total // 2, total - total // 2


def _pad1(x: jax.Array) -> jax.Array:
  return jnp.pad(x, [(1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 2))


def box_filter(x: jax.Array, k: int, stride: int) -> jax.Array:
  """Window sums of a map stored with a one-pixel zero border.

  Args:
    x: (H + 2, W + 2, ...) map whose border is zero (the SAME padding, stored once).
    k: window size, 1 or 3.
    stride: 1 or 2.

  Returns:
    (H' + 2, W' + 2, ...) window sums over k x k (SAME, strided, not normalized), H' = ceil(H / s),
    again with a zero border. Storing the border avoids materializing padded copies per conv.
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


def _conv_unpadded(s: _State, k: int, stride: int, w_var: float, b_var: float,
                   ntk_in: bool = True) -> _State:
  scale = w_var / (k * k)
  q12 = scale * box_filter(s.q12, k, stride) + b_var
  q1 = scale * box_filter(s.q1, k, stride) + b_var
  q2 = scale * box_filter(s.q2, k, stride) + b_var
  t12 = scale * box_filter(s.t12, k, stride) + q12 if ntk_in else q12
  return _State(q12, t12, q1, q2)


def _conv(s: _State, k: int, stride: int, w_var: float, b_var: float, ntk_in: bool = True) -> _State:
  return _State(*_materialize(*map(_pad1, _conv_unpadded(s, k, stride, w_var, b_var, ntk_in))))


def _residual(h: _State, w_var: float, b_var: float, shortcut: _State,
              shortcut_conv: tuple[int, int] | None) -> _State:
  """conv3x3(h) + shortcut (itself conv'd if shortcut_conv = (k, stride)), in one pass."""
  out = _conv_unpadded(h, 3, 1, w_var, b_var)
  if shortcut_conv is None:
    return _State(*_materialize(*(_pad1(a) + b for a, b in zip(out, shortcut))))
  sc = _conv_unpadded(shortcut, *shortcut_conv, w_var, b_var)
  return _State(*_materialize(*(_pad1(a + b) for a, b in zip(out, sc))))


def _block(s: _State, cfg: WRNKernelConfig, stride: int, conv_shortcut: bool,
           one: jax.Array | None) -> _State:
  w_var, b_var = cfg.w_std ** 2, cfg.b_std ** 2
  relu = _fenced(_relu, one)
  conv = lambda x, k, st: _fenced(lambda y: _conv(y, k, st, w_var, b_var), one)(x)
  a = relu(s)
  h = relu(conv(a, 3, stride))
  # The second conv and the residual sum share one pass over the maps.
  shortcut_conv = (cfg.shortcut_size, stride) if conv_shortcut else None
  residual = lambda h, sc: _residual(h, w_var, b_var, sc, shortcut_conv)
  return _fenced(residual, one)(h, a if (conv_shortcut and cfg.activate_shortcut) else s)


def _tile_kernels(x1: jax.Array, x2: jax.Array, cfg: WRNKernelConfig, fence: bool = True) -> Kernels:
  """Kernels of all T1 x T2 pairs of a tile. x1: (T1, H, W, C), x2: (T2, H, W, C).

  fence: materialize every layer (see `_fenced`); False only for speed comparisons.
  """
  one = _always_true(x1) if fence else None
  c = x1.shape[-1]
  x1 = jnp.moveaxis(x1, 0, -2)   # (H, W, T1, C)
  x2 = jnp.moveaxis(x2, 0, -2)   # (H, W, T2, C)
  # Input covariance, divided by the channel count as in stax.
  q12 = jnp.einsum("hwic,hwjc->hwij", x1, x2) / c
  q1, q2 = jnp.sum(x1 * x1, -1) / c, jnp.sum(x2 * x2, -1) / c
  s = _State(*_materialize(*map(_pad1, (q12, jnp.zeros_like(q12), q1, q2))))
  s = _conv(s, 3, 1, cfg.w_std ** 2, cfg.b_std ** 2, ntk_in=False)
  n = cfg.blocks_per_group()
  for group in range(3):
    s = _block(s, cfg, 1 if group == 0 else 2, True, one)
    # Identical blocks share one loop body: compile time stays flat in depth.
    s = lax.fori_loop(0, n - 1, lambda _, s: _block(s, cfg, 1, False, one), s)
  w_var, b_var = cfg.readout_w_std ** 2, cfg.readout_b_std ** 2
  hw = (s.q12.shape[0] - 2) * (s.q12.shape[1] - 2)
  nngp = w_var * jnp.sum(s.q12, axis=(0, 1)) / hw + b_var   # the border is zero
  ntk = w_var * jnp.sum(s.t12, axis=(0, 1)) / hw + nngp
  return Kernels(nngp, ntk)


def _check_inputs(x: jax.Array, name: str) -> None:
  if x.ndim != 4:
    raise ValueError(f"{name} must be images (N, H, W, C), got shape {x.shape}.")


_tile_kernels_jit = jax.jit(_tile_kernels, static_argnames=("cfg", "fence"))


def wrn_kernel(x1: jax.Array, x2: jax.Array | None = None, *, depth: int = 28, w_std: float = 1.0,
               b_std: float = 0.0, readout_w_std: float = 1.0, readout_b_std: float = 0.0,
               shortcut_size: int = 1, activate_shortcut: bool = False, jit: bool = True) -> Kernels:
  """NNGP and NTK of the WRN for all pairs, in one shot (use `kernel_matrix` for large N).

  Args:
    x1: (N1, H, W, C) images, e.g. log-mels (N, 32, 32, 1) float32.
    x2: (N2, H, W, C) images; None means x1.
    depth, w_std, b_std, readout_w_std, readout_b_std, shortcut_size, activate_shortcut: see
      `WRNKernelConfig`.
    jit: compile (default) or run op by op (for tests).

  Returns:
    Kernels(nngp (N1, N2), ntk (N1, N2)) in the dtype of x1.
  """
  x2 = x1 if x2 is None else x2
  _check_inputs(x1, "x1")
  _check_inputs(x2, "x2")
  chex.assert_equal_shape_suffix([x1, x2], 3)
  cfg = WRNKernelConfig(depth, float(w_std), float(b_std), float(readout_w_std),
                        float(readout_b_std), int(shortcut_size), bool(activate_shortcut))
  cfg.blocks_per_group()
  fn = _tile_kernels_jit if jit else _tile_kernels
  return fn(jnp.asarray(x1), jnp.asarray(x2), cfg)
