"""Scores: matrix form vs per-point autodiff gradients, and vs influence by finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.bilevel import ihvp
from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import outer
from bilevel_jax.bilevel import reference
from tests.bilevel import problems


def test_scores_match_per_point_gradients(x64):
  prob = problems.make_problem(seed=0)
  rng = np.random.default_rng(0)
  w, v = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=(5, 3)))
  got = outer.pool_scores(w, v, jnp.asarray(prob.pool_z), jnp.asarray(prob.pseudo))
  loss = lambda w, z, y: inner.softmax_xent(z @ w, y)
  grads = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(w, prob.pool_z, prob.pseudo)  # (P, m, c)
  np.testing.assert_allclose(got, jnp.sum(grads * v, axis=(1, 2)), rtol=1e-10)


def test_outer_objective_matches_loop_reference(x64):
  prob = problems.make_problem(seed=1)
  w = np.random.default_rng(1).normal(size=(5, 3))
  np.testing.assert_allclose(
    outer.outer_objective(jnp.asarray(w), prob.pool_z, prob.pseudo),
    reference.outer_objective(w, prob.pool_z, prob.pseudo),
    rtol=1e-12,
  )


def test_scores_predict_change_of_outer_objective(x64):
  """Add x to the inner objective with weight eps, re-solve exactly (Newton): dG = -eps * s_x."""
  prob = problems.make_problem(seed=2, n_labeled=4)
  c, l2, eps = 3, 1e-3, 1e-5
  rows_z = [z for i in prob.labeled_idx for z in prob.pool_bank[i]]
  rows_y = [np.eye(c)[prob.classes[i]] for i in prob.labeled_idx for _ in range(4)]
  targets = prob.pseudo.copy()
  targets[prob.labeled_idx] = np.eye(c)[prob.labeled_labels]
  w0 = reference.newton_solve(rows_z, rows_y, l2, np.zeros((5, c)))
  bank = inner.Bank(
    jnp.asarray(prob.pool_bank[prob.labeled_idx]),
    jnp.asarray(np.eye(c)[prob.labeled_labels]),
    jnp.ones(4, bool),
  )
  g = jax.grad(outer.outer_objective)(jnp.asarray(w0), prob.pool_z, targets)
  v = ihvp.inverse_hvp(lambda w: inner.bank_objective(w, bank, l2), jnp.asarray(w0), g, steps=30).x
  scores = np.asarray(outer.pool_scores(jnp.asarray(w0), v, prob.pool_z, prob.pseudo))
  order = np.argsort(scores)
  for x in [order[0], order[len(order) // 2], order[-1]]:
    dg = []
    for sign in (1, -1):
      extra = (sign * eps, prob.pool_z[x], prob.pseudo[x])
      w_eps = reference.newton_solve(rows_z, rows_y, l2, w0, extra=extra, tol=1e-14)
      dg.append(reference.outer_objective(w_eps, prob.pool_z, targets))
    fd = (dg[0] - dg[1]) / (2 * eps)
    np.testing.assert_allclose(fd, -scores[x], rtol=1e-4, atol=1e-6 * np.abs(scores).max())


def test_shape_mismatches_raise_at_trace_time():
  """Before the review a (c, m) weight passed where (m, c) is expected (here m = c + 2 = 5)
  failed inside a matmul; labels of the wrong length broadcast against (1, c) silently."""
  prob = problems.make_problem(seed=0)
  w = jnp.zeros((5, 3))
  with pytest.raises(AssertionError):
    outer.outer_objective(w, prob.pool_z, prob.pseudo[:1])  # (1, c) would broadcast
  with pytest.raises(AssertionError):
    outer.pool_scores(w, w.T, prob.pool_z, prob.pseudo)
  with pytest.raises(AssertionError):
    outer.outer_value_grad_t(w.T, prob.pool_z, prob.pseudo, jnp.ones(3, bool))
