"""Baseline strategies of the paper (SPEC section 4), all jitted over the whole pool.

Each returns (b,) int32 distinct indices of unlabeled training-set points.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from bilevel_jax.strategies import base

# Numbers of augmented predictions used by the paper's baselines.
ENTROPY_AUGMENTATIONS = 2
CONSISTENCY_AUGMENTATIONS = 5


@base.register("uniform")
def uniform(key: jax.Array, ctx: base.RoundContext, b: int) -> jax.Array:
  """b pool points uniformly at random, without replacement."""
  return base.uniform_in_pool(key, ctx.labeled_mask, b)


@base.register("max_entropy", augmentations=ENTROPY_AUGMENTATIONS)
def max_entropy(key: jax.Array, ctx: base.RoundContext, b: int) -> jax.Array:
  """Top-b predictive entropy, predictions averaged over 2 augmentations (aug_probs (K, N, C))."""
  del key
  mean_probs = jnp.mean(ctx.aug_probs[:ENTROPY_AUGMENTATIONS], axis=0)  # (N, C)
  return base.top_b_in_pool(base.entropy(mean_probs), ctx.labeled_mask, b)


def consistency_scores(aug_probs: jax.Array) -> jax.Array:
  """Gao et al. (2019) inconsistency: sum over classes of the variance over augmentations.

  Args:
    aug_probs: (K, N, C) predictions under K augmentations.

  Returns:
    (N,) scores; larger = less consistent.
  """
  return jnp.sum(jnp.var(aug_probs, axis=0), axis=-1)


@base.register("consistency", augmentations=CONSISTENCY_AUGMENTATIONS)
def consistency(key: jax.Array, ctx: base.RoundContext, b: int) -> jax.Array:
  """Top-b variance of predictions over 5 augmentations."""
  del key
  scores = consistency_scores(ctx.aug_probs[:CONSISTENCY_AUGMENTATIONS])
  return base.top_b_in_pool(scores, ctx.labeled_mask, b)


def _distances_to(x: jax.Array, center: jax.Array) -> jax.Array:
  """Euclidean distances (N,) from rows of x (N, E) to one center (E,)."""
  return jnp.sqrt(jnp.sum(jnp.square(x - center), axis=-1))


def kcenter_greedy(
  key: jax.Array, embeddings: jax.Array, labeled_mask: jax.Array, labeled_idx: jax.Array, b: int
) -> jax.Array:
  """Sener & Savarese (2018) greedy k-center in embedding space.

  Repeatedly picks the pool point farthest (Euclidean) from its nearest center, where the
  centers are the labeled points and the points picked so far. Keeps a running (N,)
  min-distance vector, so the cost is O((L + b) N E) and no (N, N) matrix is formed.

  Args:
    key: used only when nothing is labeled (random first center).
    embeddings: (N, E) last-layer embeddings.
    labeled_mask: (N,) bool.
    labeled_idx: (L,) int32 labeled indices (L may be 0).
    b: batch size.

  Returns:
    (b,) int32 picks in selection order.
  """
  x = embeddings.astype(jnp.float32)
  n = x.shape[0]
  if labeled_idx.shape[0] == 0:
    # No centers yet: every point is infinitely far, so break the tie at random.
    min_dist = jax.random.uniform(key, (n,), jnp.float32, 1e30, 2e30)
  else:
    min_dist = lax.fori_loop(
      0,
      labeled_idx.shape[0],
      lambda i, d: jnp.minimum(d, _distances_to(x, x[labeled_idx[i]])),
      jnp.full((n,), jnp.inf, jnp.float32),
    )

  def body(t, state):
    min_dist, available, picks = state
    pick = jnp.argmax(jnp.where(available, min_dist, -jnp.inf)).astype(jnp.int32)
    min_dist = jnp.minimum(min_dist, _distances_to(x, x[pick]))
    return min_dist, available.at[pick].set(False), picks.at[t].set(pick)

  init = (min_dist, jnp.logical_not(labeled_mask), jnp.zeros((b,), jnp.int32))
  return lax.fori_loop(0, b, body, init)[2]


@base.register("kcenter", embeddings=True)
def kcenter(key: jax.Array, ctx: base.RoundContext, b: int) -> jax.Array:
  """k-center greedy on last-layer embeddings (ctx.embeddings (N, E))."""
  return kcenter_greedy(key, ctx.embeddings, ctx.labeled_mask, ctx.labeled_idx, b)
