"""Outer objective and greedy scores of every pool point at once.

Outer objective on clean (not augmented) features of the whole training pool:

  G(w) = (1 / N) * sum_{x in pool} CE(softmax(w^T z_x), t_x)

with t_x the one-hot true label for labeled points and the soft pseudo-label y~_x otherwise,
i.e. the paper's sum over D_train (true labels) + D_pool (pseudo-labels); N = 1 under
reduction="sum" (the paper's Eq. 3) and N = P under "mean". The convention only scales G, v
and every score of a greedy step by the same factor, so it never changes a pick. With a
validity mask (padding rows of a sharded pool) the sum runs over valid points and P counts them.

Score of pool point x (paper Eq. 2): s_x = grad_w l(x, y~_x)^T H^-1 grad_w G(w) = z_x^T v (p_x - y~_x)
with v = H^-1 grad G (m, c) and p_x = softmax(w^T z_x), because grad_w l(x, y) = z_x (p_x - y)^T.
If x enters the inner objective with weight eps, G changes by -eps * s_x + O(eps^2), so the
greedy rule takes the largest score.

The `_t` functions take transposed weights (c, m), the layout the selection loop uses.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from bilevel_jax.bilevel import inner


def _check(w_mc, pool_z, labels) -> None:
  """Trace-time shapes: w_mc (m, c), pool_z (P, m), labels (P, c)."""
  chex.assert_rank([w_mc, pool_z, labels], 2)
  chex.assert_equal_shape_prefix([pool_z, labels], 1)
  chex.assert_equal(pool_z.shape[1], w_mc.shape[0])
  chex.assert_equal(labels.shape[1], w_mc.shape[1])


def outer_objective(
  w: jax.Array, pool_z: jax.Array, targets: jax.Array, reduction: str = "mean"
) -> jax.Array:
  """G(w). w: (m, c), pool_z: (P, m), targets: (P, c) label distributions. Returns ()."""
  _check(w, pool_z, targets)
  inner.check_reduction(reduction)
  xent = inner.softmax_xent(pool_z @ w, targets)
  return jnp.mean(xent) if reduction == "mean" else jnp.sum(xent)


def pool_scores(
  w: jax.Array, v: jax.Array, pool_z: jax.Array, pseudo_labels: jax.Array
) -> jax.Array:
  """Scores s_x for every pool point with matrix products only.

  w, v: (m, c); pool_z: (P, m); pseudo_labels: (P, c). Returns (P,).
  """
  _check(w, pool_z, pseudo_labels)
  chex.assert_equal_shape([w, v])
  p = jax.nn.softmax(pool_z @ w, axis=-1)  # (P, c)
  zv = pool_z @ v  # (P, c)
  return jnp.sum(zv * (p - pseudo_labels), axis=-1)


def outer_value_grad_t(
  wt: jax.Array,
  pool_z: jax.Array,
  targets: jax.Array,
  valid: jax.Array | None = None,
  reduction: str = "mean",
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """G, its gradient and the pool probabilities from one pass over the pool.

  wt: (c, m); pool_z: (P, m); targets: (P, c); valid: optional (P,) bool (False rows ignored);
  reduction: "mean" or "sum" (module docstring; static).
  Returns G (), grad G transposed (c, m) and softmax(w^T z) (P, c) for `pool_scores_t`.
  """
  _check(wt.T, pool_z, targets)
  inner.check_reduction(reduction)
  if valid is not None:
    chex.assert_shape(valid, pool_z.shape[:1])
  p_pool = pool_z.shape[0]
  if reduction == "sum":
    weight = jnp.asarray(1.0, pool_z.dtype) if valid is None else valid.astype(pool_z.dtype)
  elif valid is None:
    weight = jnp.asarray(1.0 / p_pool, pool_z.dtype)
  else:
    weight = valid.astype(pool_z.dtype) / jnp.maximum(jnp.sum(valid), 1)
  logits = pool_z @ wt.T  # (P, c)
  lse = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  probs = jnp.exp(logits - lse)
  sy = jnp.sum(targets, axis=-1, keepdims=True)
  col = weight[:, None] if jnp.ndim(weight) else weight
  value = jnp.sum(col * (sy * lse - jnp.sum(targets * logits, axis=-1, keepdims=True)))
  grad_t = ((sy * probs - targets) * col).T @ pool_z  # (c, m)
  return value, grad_t, probs


def pool_scores_t(
  probs: jax.Array, vt: jax.Array, pool_z: jax.Array, pseudo_labels: jax.Array
) -> jax.Array:
  """`pool_scores` from precomputed probabilities (P, c) and v transposed (c, m). (P,)"""
  _check(vt.T, pool_z, pseudo_labels)
  chex.assert_equal_shape([probs, pseudo_labels])
  return jnp.sum((pool_z @ vt.T) * (probs - pseudo_labels), axis=-1)
