"""MixMatch pieces as pure functions (Berthelot et al. 2019), composable under grad/vmap.

Shapes: B labeled examples, K augmentations of B unlabeled examples, C classes,
inputs x of any per-example shape (here log-mel images (32, 32, 1)).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def sharpen(p: jax.Array, temperature: float) -> jax.Array:
  """Sharpen(p, T)_i = p_i^(1/T) / sum_j p_j^(1/T). p: (..., C) probabilities."""
  logp = jnp.log(jnp.clip(p, 1e-30)) / temperature
  return jax.nn.softmax(logp, axis=-1)


def guess_labels(logits_per_aug: jax.Array, temperature: float) -> jax.Array:
  """Averages softmax over K augmentations and sharpens. logits: (K, B, C) -> (B, C)."""
  chex.assert_rank(logits_per_aug, 3)
  p = jnp.mean(jax.nn.softmax(logits_per_aug, axis=-1), axis=0)
  return jax.lax.stop_gradient(sharpen(p, temperature))


def mixup_lambda(key: jax.Array, n: int, alpha: float) -> jax.Array:
  """lambda' = max(lambda, 1 - lambda), lambda ~ Beta(alpha, alpha), one per example: (n,)."""
  lam = jax.random.beta(key, alpha, alpha, (n,))
  return jnp.maximum(lam, 1.0 - lam)


def mixup(
  x1: jax.Array, y1: jax.Array, x2: jax.Array, y2: jax.Array, lam: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Convex combination with per-example weight lam (n,) on the first argument."""
  chex.assert_equal_shape([x1, x2])
  chex.assert_equal_shape([y1, y2])
  lx = lam.reshape((-1,) + (1,) * (x1.ndim - 1))
  ly = lam.reshape((-1,) + (1,) * (y1.ndim - 1))
  return lx * x1 + (1 - lx) * x2, ly * y1 + (1 - ly) * y2


def mixmatch_batch(
  key: jax.Array, x: jax.Array, y_onehot: jax.Array, u: jax.Array, q: jax.Array, alpha: float
) -> tuple[jax.Array, jax.Array]:
  """Builds the MixMatch training batch.

  Args:
    key: PRNG key.
    x: (B, ...) augmented labeled inputs; y_onehot: (B, C).
    u: (K*B, ...) augmented unlabeled inputs (all K augmentations); q: (K*B, C) guessed labels.
    alpha: MixUp Beta parameter.

  Returns:
    inputs (B + K*B, ...) and targets (B + K*B, C): the first B rows are X' (mixed labeled),
    the rest U' (mixed unlabeled), each mixed with a shuffled row of W = concat(X, U).
  """
  chex.assert_equal_shape_prefix([x, y_onehot], 1)
  chex.assert_equal_shape_prefix([u, q], 1)
  perm_key, lam_key = jax.random.split(key)
  w_x = jnp.concatenate([x, u], axis=0)
  w_y = jnp.concatenate([y_onehot, q], axis=0)
  n = w_x.shape[0]
  perm = jax.random.permutation(perm_key, n)
  lam = mixup_lambda(lam_key, n, alpha)
  return mixup(w_x, w_y, w_x[perm], w_y[perm], lam)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean over the batch of -sum_c t_c log softmax(logits)_c. (N, C), (N, C) -> ()."""
  return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def l2_consistency(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """MixMatch's unlabeled loss: ||q - softmax(logits)||^2 / C, averaged over the batch."""
  return jnp.mean(jnp.square(targets - jax.nn.softmax(logits, axis=-1)))


def rampup_weight(step: jax.Array, lambda_u: float, rampup_steps: int) -> jax.Array:
  """lambda_u * clip(step / rampup_steps, 0, 1) (linear ramp-up); constant if rampup_steps <= 0."""
  if rampup_steps <= 0:
    return jnp.asarray(lambda_u, jnp.float32)
  return lambda_u * jnp.clip(step.astype(jnp.float32) / rampup_steps, 0.0, 1.0)


def mixmatch_loss(
  logits: jax.Array, targets: jax.Array, batch_labeled: int, weight_u: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """L = L_X + w_u * L_U on the MixMatch batch. logits, targets: (B + K*B, C).

  Returns (total, (L_X, L_U)).
  """
  chex.assert_equal_shape([logits, targets])
  lx = soft_cross_entropy(logits[:batch_labeled], targets[:batch_labeled])
  lu = l2_consistency(logits[batch_labeled:], targets[batch_labeled:])
  return lx + weight_u * lu, (lx, lu)
