"""MixMatch pieces against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.ssl import mixmatch


def test_sharpen_matches_numpy(x64):
  p = np.random.default_rng(0).dirichlet(np.ones(5), size=4)
  want = p**2 / np.sum(p**2, axis=-1, keepdims=True)
  np.testing.assert_allclose(mixmatch.sharpen(jnp.asarray(p), 0.5), want, rtol=1e-12)
  np.testing.assert_allclose(mixmatch.sharpen(jnp.asarray(p), 1.0), p, rtol=1e-12)


def test_guess_labels_averages_augmentations_and_stops_gradient(x64):
  logits = jax.random.normal(jax.random.key(0), (2, 3, 4), jnp.float64)
  p = np.asarray(jax.nn.softmax(logits, -1)).mean(0)
  want = p**2 / np.sum(p**2, -1, keepdims=True)
  np.testing.assert_allclose(mixmatch.guess_labels(logits, 0.5), want, rtol=1e-12)
  g = jax.grad(lambda l: jnp.sum(mixmatch.guess_labels(l, 0.5) * jnp.arange(4.0)))(logits)
  assert np.all(np.asarray(g) == 0)


def test_mixup_lambda_distribution():
  lam = np.asarray(mixmatch.mixup_lambda(jax.random.key(0), 20000, 0.75))
  assert lam.min() >= 0.5 and lam.max() <= 1.0
  ref = np.random.default_rng(0).beta(0.75, 0.75, 200000)
  assert abs(lam.mean() - np.maximum(ref, 1 - ref).mean()) < 0.01


def test_mixmatch_batch_is_convex_mix_with_permutation():
  b, ku, c = 3, 4, 5
  n = b + ku
  x = jnp.eye(n)[:b]  # row r of W encodes its index as a one-hot input
  u = jnp.eye(n)[b:]
  rng = np.random.default_rng(0)
  y = jax.nn.one_hot(rng.integers(0, c, b), c)
  q = jnp.asarray(rng.dirichlet(np.ones(c), ku))
  inputs, targets = mixmatch.mixmatch_batch(jax.random.key(3), x, y, u, q, 0.75)
  assert inputs.shape == (n, n) and targets.shape == (n, c)
  w_y = np.concatenate([np.asarray(y), np.asarray(q)])
  inputs = np.asarray(inputs)
  partners = []
  for r in range(n):
    others = inputs[r].copy()
    others[r] = 0.0
    j = int(np.argmax(others))
    if others[j] < 1e-6:  # paired with itself
      j, lam = r, 1.0
    else:
      lam = inputs[r, r]
    assert 0.5 - 1e-6 <= lam <= 1.0 + 1e-6
    np.testing.assert_allclose(inputs[r].sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(targets[r], lam * w_y[r] + (1 - lam) * w_y[j], atol=1e-6)
    partners.append(j)
  assert sorted(partners) == list(range(n))  # partners are a permutation of W
  np.testing.assert_allclose(np.asarray(targets).sum(-1), 1.0, atol=1e-6)


def test_losses_match_numpy(x64):
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(6, 4))
  targets = rng.dirichlet(np.ones(4), 6)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  prob = np.exp(logp)
  ce = -np.mean(np.sum(targets * logp, -1))
  l2 = np.mean(np.sum((targets - prob) ** 2, -1)) / 4
  np.testing.assert_allclose(mixmatch.soft_cross_entropy(logits, targets), ce, rtol=1e-12)
  np.testing.assert_allclose(mixmatch.l2_consistency(logits, targets), l2, rtol=1e-12)
  total, (lx, lu) = mixmatch.mixmatch_loss(jnp.asarray(logits), jnp.asarray(targets), 2, 3.0)
  ce_x = -np.mean(np.sum(targets[:2] * logp[:2], -1))
  l2_u = np.mean(np.sum((targets[2:] - prob[2:]) ** 2, -1)) / 4
  np.testing.assert_allclose([lx, lu, total], [ce_x, l2_u, ce_x + 3 * l2_u], rtol=1e-12)


@pytest.mark.parametrize("step,want", [(0, 0.0), (50, 5.0), (100, 10.0), (500, 10.0)])
def test_rampup(step, want):
  np.testing.assert_allclose(mixmatch.rampup_weight(jnp.int32(step), 10.0, 100), want)
  np.testing.assert_allclose(mixmatch.rampup_weight(jnp.int32(step), 10.0, 0), 10.0)
