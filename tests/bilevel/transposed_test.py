"""The selection loop's transposed (c, m) pieces against autodiff / dense Hessians of the
(m, c) definitions: objective, hand-written gradient, closed-form HVP, one-pass outer G."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import outer
from tests.bilevel import problems


def _bank(prob, rng):
  """Labeled slots (one-hot), two soft-labelled slots, one empty slot holding garbage."""
  c = prob.pseudo.shape[1]
  z = prob.pool_bank[list(prob.labeled_idx) + [0, 1]]
  y = np.concatenate([np.eye(c)[prob.labeled_labels], prob.pseudo[[0, 1]]])
  z = np.concatenate([z, 40.0 * rng.normal(size=(1,) + z.shape[1:])])
  y = np.concatenate([y, np.full((1, c), 1.0 / c)])
  return inner.Bank(jnp.asarray(z), jnp.asarray(y), jnp.arange(len(z)) < len(z) - 1)


def test_transposed_objective_gradient_and_hvp_match_autodiff(x64):
  prob = problems.make_problem(seed=3, n_labeled=4)
  rng = np.random.default_rng(0)
  bank = _bank(prob, rng)
  l2 = 1e-2
  w, u = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=(5, 3)))

  @jax.jit  # one compilation instead of dozens of eager x64 ops
  def both(w, u):
    f = lambda x: inner.bank_objective(x, bank, l2)
    z, y, weight = inner.bank_rows(bank)
    loss, g_t = inner.xent_grad_t(w.T, z, y, weight)
    h = jax.hessian(lambda x: f(x.reshape(5, 3)))(w.ravel())
    got = (
      inner.bank_objective_t(w.T, bank, l2),
      loss + l2 * jnp.sum(w * w),
      g_t.T + 2 * l2 * w,
      inner.bank_hvp_t(w.T, bank, l2)(u.T).T.ravel(),
    )
    return got, (f(w), f(w), jax.grad(f)(w), h @ u.ravel())

  got, want = both(w, u)
  for g, wt, rtol in zip(got, want, (1e-12, 1e-12, 1e-10, 1e-10)):
    np.testing.assert_allclose(g, wt, rtol=rtol, atol=1e-12)


def test_one_pass_outer_value_gradient_and_mask(x64):
  prob = problems.make_problem(seed=4)
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(5, 3)))
  z, t = jnp.asarray(prob.pool_z), jnp.asarray(prob.pseudo)
  v = jnp.asarray(rng.normal(size=(5, 3)))
  valid = np.arange(z.shape[0]) % 3 != 0  # masked rows drop out of G and grad G

  @jax.jit
  def both(w, v):
    val, g_t, probs = outer.outer_value_grad_t(w.T, z, t)
    val_m, g_m, _ = outer.outer_value_grad_t(w.T, z, t, jnp.asarray(valid))
    zm, tm = z[valid], t[valid]
    got = (val, g_t.T, probs, outer.pool_scores_t(probs, v.T, z, t), val_m, g_m.T)
    want = (
      outer.outer_objective(w, z, t),
      jax.grad(outer.outer_objective)(w, z, t),
      jax.nn.softmax(z @ w),
      outer.pool_scores(w, v, z, t),
      outer.outer_objective(w, zm, tm),
      jax.grad(outer.outer_objective)(w, zm, tm),
    )
    return got, want

  got, want = both(w, v)
  for g, wt, rtol in zip(got, want, (1e-12, 1e-10, 1e-12, 1e-10, 1e-12, 1e-10)):
    np.testing.assert_allclose(g, wt, rtol=rtol, atol=1e-12)
