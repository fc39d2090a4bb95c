"""solver="exact" and loss_reduction: the exact reference's whole pick sequence, per convention;
recorded tolerances; traced tolerances; the reference itself is exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.bilevel import exact
from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import outer
from bilevel_jax.bilevel import reference
from bilevel_jax.bilevel import select
from tests.bilevel import problems


def _select(prob, *, b=5, dtype=np.float64, **kw):
  bank_fn, params = select.precomputed_bank(prob.pool_bank.astype(dtype))
  return select.select_batch(
    jax.random.key(0),
    prob.pool_z.astype(dtype),
    prob.pseudo.astype(dtype),
    prob.labeled_idx,
    prob.labeled_labels,
    prob.pool_bank[prob.labeled_idx].astype(dtype),
    bank_fn,
    params,
    b=b,
    uniform_fraction=0.0,
    **kw,
  )


def _reference(prob, *, b=5, l2, red):
  return reference.select(
    prob.pool_z,
    prob.pseudo,
    prob.labeled_idx,
    prob.labeled_labels,
    prob.pool_bank[prob.labeled_idx],
    prob.pool_bank,
    b=b,
    l2=l2,
    loss_reduction=red,
  )


def _grad_at_zero(prob, picks, l2, red):
  """||grad F(0)|| of the inner problem each pick was scored with (the tolerance's scale)."""
  c = prob.pseudo.shape[1]
  a = prob.pool_bank.shape[1]
  zs = [z for copies in prob.pool_bank[prob.labeled_idx] for z in copies]
  ys = [np.eye(c)[lab] for lab in prob.labeled_labels for _ in range(a)]
  out = []
  for pick in picks:
    g, _ = reference.inner_grad_hessian(
      np.zeros((prob.pool_z.shape[1], c)), zs, ys, l2, row_weight=1.0 / a if red == "sum" else None
    )
    out.append(np.linalg.norm(g))
    zs += list(prob.pool_bank[pick])
    ys += [prob.pseudo[pick]] * a
  return np.array(out)


@pytest.mark.parametrize("red", ["sum", "mean"])
def test_objectives_follow_the_convention(x64, red):
  """F and G (values, grad G) of inner.py / outer.py against the reference's loops."""
  prob = problems.make_problem(seed=1, p=12, m=5, c=3, a=4, n_labeled=3)
  rng = np.random.default_rng(0)
  w = rng.normal(size=(5, 3))
  valid = np.array([True, True, True, False])
  bank = inner.Bank(
    jnp.asarray(prob.pool_bank[:4]), jnp.asarray(prob.pseudo[:4]), jnp.asarray(valid)
  )
  zs = [z for copies in prob.pool_bank[:3] for z in copies]
  ys = [y for y in prob.pseudo[:3] for _ in range(4)]
  want = reference.inner_objective(w, zs, ys, 1e-2, row_weight=0.25 if red == "sum" else None)
  np.testing.assert_allclose(
    inner.bank_objective(jnp.asarray(w), bank, 1e-2, red), want, rtol=1e-12
  )
  g_val, g_t, _ = outer.outer_value_grad_t(
    jnp.asarray(w.T), jnp.asarray(prob.pool_z), jnp.asarray(prob.pseudo), reduction=red
  )
  np.testing.assert_allclose(
    g_val, reference.outer_objective(w, prob.pool_z, prob.pseudo, red), rtol=1e-12
  )
  np.testing.assert_allclose(
    np.asarray(g_t).T.ravel(), reference.outer_grad(w, prob.pool_z, prob.pseudo, red), rtol=1e-10
  )
  # "sum" is "mean" times the number of valid slots, with l2 scaled alike.
  ratio = inner.bank_objective(jnp.asarray(w), bank, 3e-2, "sum") / inner.bank_objective(
    jnp.asarray(w), bank, 1e-2, "mean"
  )
  np.testing.assert_allclose(ratio, 3.0, rtol=1e-12)


@pytest.mark.parametrize("red", ["sum", "mean"])
def test_paper_solver_with_exact_inner_follows_the_convention(x64, red):
  """The paper solver's path (inner_solver hook, fixed CG) with a converged inner solve gives
  the reference's picks in both conventions: the convention reaches every part of the solver."""
  prob = problems.make_problem(seed=0, p=24, n_labeled=3)
  sel = _select(prob, l2=1e-2, cg_steps=30, inner_solver=inner.LBFGSSolver(60), loss_reduction=red)
  ref = _reference(prob, l2=1e-2, red=red)
  np.testing.assert_array_equal(sel.indices, ref.indices)
  np.testing.assert_allclose(sel.scores, ref.scores, rtol=1e-6)


def test_conventions_pick_differently_at_small_l2(x64):
  """The convention matters (the effective lambda differs by the number of bank points)."""
  prob = problems.make_problem(seed=3, p=60, m=12, c=4, a=3, n_labeled=8)
  picks = {red: _reference(prob, l2=1e-2, red=red).indices.tolist() for red in ("sum", "mean")}
  assert picks["sum"] != picks["mean"]


_CASES = [  # seed, m, c, l2, reduction, dtype
  (0, 12, 4, 1e-2, "sum", np.float64),
  (1, 12, 4, 1e-4, "mean", np.float64),
  (2, 12, 4, 1e-4, "sum", np.float32),
]
_SLOW_CASES = [
  (s, m, c, l2, red, dt)
  for s, (m, c) in enumerate([(32, 10), (64, 4), (64, 10)])
  for l2 in (1e-2, 1e-4)
  for red in ("sum", "mean")
  for dt in (np.float32, np.float64)
]


def _float32_floors(prob, ref, l2, red):
  """Per pick, eps32 (||sum_i w_i z_i z_i^T|| + 2 l2) ||v|| / ||grad G||: the relative residual
  that rounding alone gives a float32 H v - grad G at the reference's exact v (v has a part of norm ~||grad G|| / 2 l2
  outside the rows' span, whose product with the rows cancels only to float32 rounding)."""
  c = prob.pseudo.shape[1]
  a = prob.pool_bank.shape[1]
  zs = [z for copies in prob.pool_bank[prob.labeled_idx] for z in copies]
  ys = [np.eye(c)[lab] for lab in prob.labeled_labels for _ in range(a)]
  targets = prob.pseudo.copy()
  targets[prob.labeled_idx] = np.eye(c)[prob.labeled_labels]
  out = []
  for pick, w in zip(ref.indices, ref.ws):
    rw = 1.0 / a if red == "sum" else 1.0 / len(zs)
    _, h = reference.inner_grad_hessian(w, zs, ys, l2, row_weight=rw)
    g = reference.outer_grad(w, prob.pool_z, targets, red)
    v = np.linalg.solve(h, g)
    # The scale of the summed terms, not of H: the softmax curvature of each row makes them
    # cancel (at the first pick ||H|| is ~1e-3 of it), which float32 resolves only to eps.
    gram = rw * np.asarray(zs).T @ np.asarray(zs)
    scale = np.linalg.norm(gram, 2) + 2 * l2
    out.append(np.finfo(np.float32).eps * scale * np.linalg.norm(v) / np.linalg.norm(g))
    zs += list(prob.pool_bank[pick])
    ys += [prob.pseudo[pick]] * a
  return np.array(out)


def _check_exact(prob, l2, red, dtype):
  tol, rtol = 1e-6, 1e-4
  sel = _select(
    prob, dtype=dtype, l2=l2, solver="exact", loss_reduction=red, inner_tol=tol, ihvp_rtol=rtol
  )
  ref = _reference(prob, l2=l2, red=red)
  np.testing.assert_array_equal(sel.indices, ref.indices)
  f64 = dtype == np.float64
  # Scores: the residuals times the condition number (up to ~1e-3 relative at l2 = 1e-4).
  np.testing.assert_allclose(sel.scores, ref.scores, rtol=1e-2 if f64 else 5e-2)
  g0 = _grad_at_zero(prob, ref.indices, l2, red)
  # Recorded tolerances: the Newton loop's test (float64), the float32 floor within 20x of it.
  assert np.all(np.asarray(sel.inner_grad_norm) <= (1.01 if f64 else 20) * tol * g0)
  # The inverse-HVP meets ihvp_rtol in float64. In float32 the recorded true residual of the
  # l2 = 1e-4 systems cannot go below rounding (`_float32_floors`, ~1e-3-3e-2
  # here): within 20x of that floor; the picks above still agree.
  residual = np.asarray(sel.cg_residual)
  if f64:
    assert np.all(residual <= 1.01 * rtol), residual
  else:
    floor = _float32_floors(prob, ref, l2, red)
    assert np.all(residual <= np.maximum(20 * floor, 1.01 * rtol)), (residual, floor)
  assert np.all(np.asarray(sel.inner_iterations) >= 1)
  assert np.all(np.asarray(sel.ihvp_iterations) >= 1)


@pytest.mark.parametrize("seed,m,c,l2,red,dtype", _CASES)
def test_exact_solver_matches_reference(x64, seed, m, c, l2, red, dtype):
  prob = problems.make_problem(seed=seed, p=60, m=m, c=c, a=3, n_labeled=8)
  _check_exact(prob, l2, red, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("seed,m,c,l2,red,dtype", _SLOW_CASES)
def test_exact_solver_matches_reference_grid(x64, seed, m, c, l2, red, dtype):
  prob = problems.make_problem(seed=seed, p=80, m=m, c=c, a=3, n_labeled=8)
  _check_exact(prob, l2, red, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("l2", [1e-2, 1e-4])
@pytest.mark.parametrize("red", ["sum", "mean"])
def test_exact_solver_matches_reference_on_fsdd_ntk_features(x64, fsdd_root, l2, red):
  prob = _fsdd_problem(str(fsdd_root.parent))
  for dtype in (np.float64, np.float32):
    _check_exact(prob, l2, red, dtype)


_FSDD = {}


def _fsdd_problem(root):
  if root not in _FSDD:
    _FSDD[root] = problems.fsdd_ntk_problem(root)
  return _FSDD[root]


def test_reference_is_exact(x64):
  """The reference's inner solves are at the float64 rounding level and v solves H v = grad G."""
  prob = problems.make_problem(seed=4, p=40, m=10, c=4, a=3, n_labeled=6)
  for red, l2 in (("sum", 1e-4), ("mean", 1e-2)):
    ref = _reference(prob, l2=l2, red=red)
    g0 = _grad_at_zero(prob, ref.indices, l2, red)
    assert np.all(ref.grad_norms <= 1e-10 * g0)
    assert np.all(ref.ihvp_residuals <= 1e-10)


def test_exact_tolerances_are_traced_and_checked():
  prob = problems.make_problem(seed=5, p=20, m=6, c=3, a=2, n_labeled=3, dtype=np.float32)
  before = select._select._cache_size()  # pylint: disable=protected-access
  for tol, rtol, l2 in ((1e-4, 1e-3, 1e-2), (1e-5, 1e-4, 1e-3)):
    _select(prob, b=3, dtype=np.float32, solver="exact", inner_tol=tol, ihvp_rtol=rtol, l2=l2)
  assert select._select._cache_size() - before == 1  # pylint: disable=protected-access
  for bad, match in (
    (dict(solver="newton"), "solver must be"),
    (dict(loss_reduction="avg"), "loss_reduction must be"),
    (dict(solver="exact", inner_tol=-1.0), "inner_tol must be"),
    (dict(solver="exact", inner_max_iter=0), "inner_max_iter must be"),
    (dict(solver="exact", inner_solver=inner.LBFGSSolver(3)), "cannot be"),
  ):
    with pytest.raises(ValueError, match=match):
      _select(prob, b=3, dtype=np.float32, **bad)


def test_reduced_coordinates_are_exact(x64):
  """w -> (w Q) Q^T loses nothing of F: value and gradient agree with the full-space ones."""
  rng = np.random.default_rng(0)
  z = rng.normal(size=(3, 2, 9))
  bank = inner.Bank(
    jnp.asarray(z), jnp.asarray(np.eye(4)[[0, 2, 1]]), jnp.asarray([True, True, False])
  )
  red = exact.reduce_bank(bank, "sum")
  assert red.basis.shape == (9, 6)
  wr = jnp.asarray(rng.normal(size=(4, 6)))
  f_r, g_r = exact.value_grad(wr, red, 1e-3)
  f, g = inner.bank_grad_t(exact.to_full(wr, red), bank, 1e-3, "sum")
  np.testing.assert_allclose(f_r, f, rtol=1e-12)
  np.testing.assert_allclose(exact.to_full(g_r, red), g, atol=1e-12)
