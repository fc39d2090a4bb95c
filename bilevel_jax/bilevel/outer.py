"""Outer objective and greedy scores of every pool point at once.

Outer objective on clean (not augmented) features of the whole training pool:

  G(w) = (1 / P) * sum_{x in pool} CE(softmax(w^T z_x), t_x)

with t_x the one-hot true label for labeled points and the soft pseudo-label y~_x otherwise,
i.e. the paper's sum over D_train (true labels) + D_pool (pseudo-labels), divided by P.

Score of pool point x (paper Eq. 2): s_x = grad_w l(x, y~_x)^T H^-1 grad_w G(w) = z_x^T v (p_x - y~_x)
with v = H^-1 grad G (m, c) and p_x = softmax(w^T z_x), because grad_w l(x, y) = z_x (p_x - y)^T.
If x enters the inner objective with weight eps, G changes by -eps * s_x + O(eps^2), so the
greedy rule takes the largest score.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from bilevel_jax.bilevel import inner


def outer_objective(w: jax.Array, pool_z: jax.Array, targets: jax.Array) -> jax.Array:
  """G(w). w: (m, c), pool_z: (P, m), targets: (P, c) label distributions. Returns ()."""
  return jnp.mean(inner.softmax_xent(pool_z @ w, targets))


def pool_scores(w: jax.Array, v: jax.Array, pool_z: jax.Array,
                pseudo_labels: jax.Array) -> jax.Array:
  """Scores s_x for every pool point with matrix products only. Returns (P,)."""
  p = jax.nn.softmax(pool_z @ w, axis=-1)          # (P, c)
  zv = pool_z @ v                                  # (P, c)
  return jnp.sum(zv * (p - pseudo_labels), axis=-1)
