"""Closed-form activation maps of (leaky) ReLU for pairs of centred Gaussians (arc-cosine kernels).

Leaky ReLU phi(u) = max(u, a u) = a u + (1 - a) relu(u), 0 <= a < 1. For centred Gaussians
(u, v) with variances q1, q2 and covariance q12 = rho sqrt(q1 q2), using E[u relu(v)] = q12 / 2
and E[relu'(v)] = 1 / 2, its maps follow from ReLU's arc-cosine kernels in closed form:
  E[phi(u) phi(v)]   = a q12 + (1 - a)^2 sqrt(q1 q2) J1(rho) / (2 pi),
  E[phi'(u) phi'(v)] = a + (1 - a)^2 (pi - arccos rho) / (2 pi),
  J1(rho) = sqrt(1 - rho^2) + (pi - arccos rho) rho;  on the diagonal both give (1 + a^2) / 2
  (times q1 for the first). a = 0 is ReLU.

arccos is a float32-accurate polynomial (Abramowitz & Stegun 4.4.46, |error| <= 2e-8): XLA:CPU's
arccos (atan2) cost ~40x more per element in the kernel's passes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax


# Abramowitz & Stegun 4.4.46: acos(a) = sqrt(1 - a) * poly(a) on [0, 1], |error| <= 2e-8.
_ACOS_COEFFS = (
  1.5707963050,
  -0.2145988016,
  0.0889789874,
  -0.0501743046,
  0.0308918810,
  -0.0170881256,
  0.0066700901,
  -0.0012624911,
)


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
  if a.dtype == jnp.float64:  # float64 references: exact
    acos_a = jnp.arccos(a)
  else:
    acos_a = _acos_nonneg(a, s_minus)  # arccos(|rho|)
  jdot = jnp.where(rho >= 0, math.pi - acos_a, acos_a)  # pi - arccos(rho)
  j = s_minus * jnp.sqrt(1.0 + a) + jdot * rho  # sqrt(1 - rho^2) + ...
  return j, jdot


def scaled_sqrt(q: jax.Array, slope: float) -> jax.Array:
  """(1 - a) sqrt(q / (2 pi)): the per-input factor of the arc-cosine term."""
  return jnp.sqrt(q * ((1.0 - slope) ** 2 * 0.5 / math.pi))


def activation_maps(
  q11: jax.Array, q22: jax.Array, q12: jax.Array, slope: float = 0.0
) -> tuple[jax.Array, jax.Array]:
  """E[phi(u) phi(v)] and E[phi'(u) phi'(v)] for centred Gaussians with variances q11, q22 > 0
  and covariance q12 (elementwise, same shapes), phi(u) = max(u, slope * u); the code path of
  the kernel (normalizers of `wrn_kernel.input_stats`, update of its pair passes). For tests."""
  ones = jnp.ones_like(q12)
  out = pair_update(
    q12[..., None, None],
    ones[..., None, None],
    safe_rsqrt(q11)[..., None],
    safe_rsqrt(q22)[..., None],
    scaled_sqrt(q11, slope)[..., None],
    scaled_sqrt(q22, slope)[..., None],
    slope,
  )
  return out[0][..., 0, 0], out[1][..., 0, 0]


def safe_rsqrt(q: jax.Array) -> jax.Array:
  # Zero variance (the zero border, or an all-zero padding input) gives correlation 0, not NaN.
  return jnp.where(q > 0, lax.rsqrt(jnp.maximum(q, 1e-30)), 0.0)


def pair_update(q, t, r1, r2, n1, n2, slope: float = 0.0):
  """Activation update of pair maps (..., T1, T2) given per-input normalizers (..., T1) /
  (..., T2) (`InputStats`; n includes the (1 - a) factor); slope a (static): see the module
  docstring (a = 0: ReLU, computed without the extra terms)."""
  rho = q * r1[..., :, None] * r2[..., None, :]
  j, jdot = relu_kernel(rho)
  nngp = (n1[..., :, None] * n2[..., None, :]) * j
  if slope == 0.0:
    return jnp.stack([nngp, t * (jdot * (0.5 / math.pi))])
  dot = slope + (1.0 - slope) ** 2 * (0.5 / math.pi) * jdot
  return jnp.stack([slope * q + nngp, t * dot])
