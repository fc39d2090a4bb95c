"""Nystrom features of a kernel: z_x = k(x, U) K_UU^{+1/2}, so z_u . z_u' = K(u, u') on landmarks.

Cut-off: eigenvalues of K_UU at or below `rcond * lambda_max` are treated as zero (their
directions get weight 0 in the pseudo-inverse square root). The default rcond = 1e-6 is applied
to a float64 eigendecomposition (on the host: K_UU is computed once per landmark draw), well
above float64 round-off (m * eps * lambda_max ~ 4e-13 lambda_max at m = 2000) and far below the
spectrum of the WRN NTK that matters for a logistic-regression proxy.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_RCOND = 1e-6


class NystromMap(NamedTuple):
  projection: np.ndarray  # (m, m) P = K_UU^{+1/2}, float32
  eigenvalues: np.ndarray  # (m,) eigenvalues of K_UU, ascending, float64
  rank: int  # eigenvalues kept (> rcond * max)
  rcond: float


def draw_landmarks(key: jax.Array, num_points: int, m: int) -> np.ndarray:
  """m distinct indices into the num_points points of train + pool, sorted. Returns (m,) int64."""
  if not 1 <= m <= num_points:
    raise ValueError(f"m={m} landmarks; expected 1 <= m <= num_points={num_points}.")
  return np.sort(np.asarray(jax.random.permutation(key, num_points))[:m]).astype(np.int64)


def fit_nystrom(k_uu: np.ndarray, *, rcond: float = DEFAULT_RCOND) -> NystromMap:
  """P = K_UU^{+1/2} by a float64 eigendecomposition of the symmetrized landmark kernel.

  Args:
    k_uu: (m, m) landmark kernel (symmetric PSD up to round-off).
    rcond: relative eigenvalue cut-off (see module docstring).

  Returns:
    NystromMap with the (m, m) float32 projection.
  """
  k = np.asarray(k_uu, np.float64)
  if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
    raise ValueError(f"k_uu must be a square (m, m) matrix, got shape {k.shape}.")
  if not np.all(np.isfinite(k)):
    raise ValueError("k_uu contains NaN or inf values.")
  if not 0.0 < rcond < 1.0:
    raise ValueError(f"rcond={rcond}; expected 0 < rcond < 1.")
  vals, vecs = np.linalg.eigh(0.5 * (k + k.T))
  top = max(float(vals[-1]), 0.0)
  keep = vals > rcond * top
  inv_sqrt = np.where(keep, 1.0 / np.sqrt(np.where(keep, vals, 1.0)), 0.0)
  projection = (vecs * inv_sqrt) @ vecs.T
  return NystromMap(projection.astype(np.float32), vals, int(keep.sum()), float(rcond))


def nystrom_features(k_xu: jax.Array, projection: jax.Array) -> jax.Array:
  """z = k(x, U) P. k_xu: (N, m), projection: (m, m) -> (N, m). Jit- and grad-friendly."""
  chex.assert_rank([k_xu, projection], 2)
  chex.assert_equal(k_xu.shape[-1], projection.shape[0])
  return jnp.asarray(k_xu) @ jnp.asarray(projection, jnp.asarray(k_xu).dtype)


def reconstruction_error(k_xx: np.ndarray, z: np.ndarray) -> float:
  """Relative Frobenius error ||K - z z^T|| / ||K|| of the Nystrom approximation."""
  k = np.asarray(k_xx, np.float64)
  z = np.asarray(z, np.float64)
  return float(np.linalg.norm(k - z @ z.T) / np.linalg.norm(k))
