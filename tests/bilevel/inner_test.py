"""Inner solver: objective vs the loop reference, Adam vs Newton, sampling, no retracing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import reference
from tests.bilevel import problems


def _bank(prob, n_invalid=2, dtype=np.float64):
  """Labeled slots valid (one-hot), then `n_invalid` slots of garbage that must be ignored."""
  c = prob.pseudo.shape[1]
  z = prob.pool_bank[prob.labeled_idx]
  y = np.eye(c)[prob.labeled_labels]
  garbage_z = 50.0 * np.ones((n_invalid,) + z.shape[1:])
  garbage_y = np.full((n_invalid, c), 1.0 / c)
  valid = np.arange(len(z) + n_invalid) < len(z)
  bank = inner.Bank(
    jnp.asarray(np.concatenate([z, garbage_z]), dtype),
    jnp.asarray(np.concatenate([y, garbage_y]), dtype),
    jnp.asarray(valid),
  )
  rows_z = [r for copies in z for r in copies]
  rows_y = [y[i] for i in range(len(z)) for _ in range(z.shape[1])]
  return bank, rows_z, rows_y


def test_bank_objective_matches_loop_reference(x64):
  prob = problems.make_problem(seed=1)
  bank, rows_z, rows_y = _bank(prob)
  w = np.random.default_rng(0).normal(size=(5, 3))
  got = inner.bank_objective(jnp.asarray(w), bank, 1e-2)
  want = reference.inner_objective(w, rows_z, rows_y, 1e-2)
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_full_batch_adam_matches_newton(x64):
  prob = problems.make_problem(seed=2, n_labeled=4)
  bank, rows_z, rows_y = _bank(prob)
  state = inner.init_inner_state(jnp.zeros((5, 3)))
  state, loss = inner.fit_inner(
    jax.random.key(0), state, bank, 0.05, 1e-2, steps=3000, batch_size=None
  )
  w_star = reference.newton_solve(rows_z, rows_y, 1e-2, np.zeros((5, 3)))
  np.testing.assert_allclose(state.w, w_star, atol=1e-6)
  np.testing.assert_allclose(
    loss, reference.inner_objective(w_star, rows_z, rows_y, 1e-2), rtol=1e-10
  )


def test_minibatch_adam_reaches_near_optimal_objective():
  """Paper setting (batch 64, 1000 steps) in float32 on a tiny problem: small excess loss."""
  prob = problems.make_problem(seed=3, n_labeled=6, dtype=np.float32)
  bank, rows_z, rows_y = _bank(prob, dtype=np.float32)
  state = inner.init_inner_state(jnp.zeros((5, 3), jnp.float32))
  state, loss = inner.fit_inner(
    jax.random.key(1), state, bank, 1e-2, 1e-2, steps=1000, batch_size=64
  )
  w_star = reference.newton_solve(rows_z, rows_y, 1e-2, np.zeros((5, 3)))
  f_star = reference.inner_objective(w_star, rows_z, rows_y, 1e-2)
  assert f_star <= float(loss) + 1e-6
  assert float(loss) - f_star < 1e-3 * max(1.0, f_star), (float(loss), f_star)
  w0_loss = reference.inner_objective(np.zeros((5, 3)), rows_z, rows_y, 1e-2)
  assert float(loss) < w0_loss - 0.1


def test_sampling_draws_only_valid_pairs_uniformly():
  valid = jnp.array([True, False, True, True, False])
  z = jnp.arange(5 * 3, dtype=jnp.float32).reshape(5, 3, 1)  # feature = 3 * slot + copy
  bank = inner.Bank(z, jnp.eye(5)[:, :2], valid)
  zs, _ = inner.sample_pairs(jax.random.key(0), bank, 30000)
  ids = np.asarray(zs[:, 0]).astype(int)
  slots, copies = ids // 3, ids % 3
  assert set(np.unique(slots)) == {0, 2, 3}
  freq = np.bincount(ids, minlength=15)[[0, 1, 2, 6, 7, 8, 9, 10, 11]] / len(ids)
  np.testing.assert_allclose(freq, 1 / 9, atol=0.01)
  assert set(np.unique(copies)) == {0, 1, 2}


def test_hyperparameters_are_traced_not_static():
  prob = problems.make_problem(seed=4, dtype=np.float32)
  bank, _, _ = _bank(prob, dtype=np.float32)
  before = inner.fit_inner._cache_size()
  for lr, l2 in [(1e-3, 1e-4), (1e-2, 1e-3), (3e-2, 0.0)]:
    state = inner.init_inner_state(jnp.zeros((5, 3), jnp.float32))
    inner.fit_inner(jax.random.key(0), state, bank, lr, l2, steps=7, batch_size=8)
  assert inner.fit_inner._cache_size() - before == 1


@pytest.mark.parametrize("batch_size", [8, None])
def test_warm_start_continues(batch_size):
  """A carried state continues: Adam's step count goes on and the objective keeps falling."""
  prob = problems.make_problem(seed=5, dtype=np.float32)
  bank, _, _ = _bank(prob, dtype=np.float32)
  s0 = inner.init_inner_state(jnp.zeros((5, 3), jnp.float32))
  s1, _ = inner.fit_inner(jax.random.key(0), s0, bank, 1e-2, 1e-4, steps=50, batch_size=batch_size)
  s2, loss2 = inner.fit_inner(
    jax.random.key(1), s1, bank, 1e-2, 1e-4, steps=50, batch_size=batch_size
  )
  assert int(s2.opt_state.count) == 100
  _, loss1 = inner.fit_inner(
    jax.random.key(0), s0, bank, 1e-2, 1e-4, steps=50, batch_size=batch_size
  )
  assert float(loss2) < float(loss1)
