"""CG inverse-HVP against dense solves of jax.hessian."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.bilevel import ihvp
from bilevel_jax.bilevel import inner
from tests.bilevel import problems


def _inner_fn(prob, l2):
  c = prob.pseudo.shape[1]
  bank = inner.Bank(
    jnp.asarray(prob.pool_bank[prob.labeled_idx]),
    jnp.asarray(np.eye(c)[prob.labeled_labels]),
    jnp.ones(len(prob.labeled_idx), bool),
  )
  return lambda w: inner.bank_objective(w, bank, l2)


def test_hvp_matches_dense_hessian(x64):
  prob = problems.make_problem(seed=0)
  f = _inner_fn(prob, 1e-3)
  rng = np.random.default_rng(0)
  w, u = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=(5, 3)))
  both = jax.jit(
    lambda w, u: (
      ihvp.hvp(f, w, u).ravel(),  # one compile, not eager ops
      jax.hessian(lambda x: f(x.reshape(5, 3)))(w.ravel()) @ u.ravel(),
    )
  )
  got, want = both(w, u)
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_cg_matches_dense_solve_of_hessian(x64):
  prob = problems.make_problem(seed=1, n_labeled=5)
  f = _inner_fn(prob, 1e-4)
  rng = np.random.default_rng(1)
  w, g = jnp.asarray(0.3 * rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=(5, 3)))
  h = jax.jit(jax.hessian(lambda x: f(x.reshape(5, 3))))(w.ravel())
  want = np.linalg.solve(h, g.ravel()).reshape(5, 3)
  res = jax.jit(lambda w, g: ihvp.inverse_hvp(f, w, g, steps=30))(w, g)
  np.testing.assert_allclose(res.x, want, rtol=1e-7, atol=1e-7 * np.abs(want).max())
  assert float(res.residual) < 1e-8
  # The reported residual is the true one: recompute it from the dense Hessian.
  true_res = np.linalg.norm(h @ np.asarray(res.x).ravel() - g.ravel()) / np.linalg.norm(g)
  np.testing.assert_allclose(res.residual, true_res, rtol=1e-3, atol=1e-11)


def test_truncated_cg_reports_its_residual(x64):
  """With few steps on an ill-conditioned SPD matrix the residual is large and reported."""
  rng = np.random.default_rng(2)
  q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
  a = jnp.asarray(q @ np.diag(np.logspace(-4, 2, 40)) @ q.T)
  b = jnp.asarray(rng.normal(size=40))
  few = ihvp.cg_solve(lambda x: a @ x, b, steps=3)
  want = np.linalg.norm(a @ few.x - b) / np.linalg.norm(b)
  np.testing.assert_allclose(few.residual, want, rtol=1e-8)
  many = ihvp.cg_solve(lambda x: a @ x, b, steps=400)
  assert float(many.residual) < 1e-6 < float(few.residual)


def test_cg_stays_finite_after_exact_convergence(x64):
  a = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
  b = jnp.array([1.0, 1.0, 1.0])
  res = ihvp.cg_solve(lambda x: a @ x, b, steps=30)  # exact after 3 steps, then r = 0
  np.testing.assert_allclose(res.x, [1.0, 0.5, 1 / 3], rtol=1e-12)
  assert np.isfinite(float(res.residual))


def test_matvec_shape_mismatch_raises_at_trace_time():
  """A matvec that returns a broadcastable but wrong shape: before the review CG ran silently
  (here: (3,) - alpha * (1,) broadcasts) and returned a wrong x."""
  b = jnp.array([1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match=r"matvec maps shape \(3,\) to \(1,\)"):
    ihvp.cg_solve(lambda x: jnp.sum(x, keepdims=True), b, steps=3)
