"""select_batch: picks vs the NumPy reference, determinism, invariants, compile-once, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import reference
from bilevel_jax.bilevel import select
from tests.bilevel import problems

_FAST = dict(inner_steps=40, batch_size=16, cg_steps=10, lr=1e-2, l2=1e-3)


def _args(prob):
  bank_fn, params = select.precomputed_bank(prob.pool_bank)
  return (
    prob.pool_z,
    prob.pseudo,
    prob.labeled_idx,
    prob.labeled_labels,
    prob.pool_bank[prob.labeled_idx],
    bank_fn,
    params,
  )


def test_greedy_picks_match_numpy_reference(x64):
  """Deterministic setting (full-batch Adam run to convergence) vs Newton + dense solve."""
  prob = problems.make_problem(seed=0, p=24, n_labeled=3)
  sel = select.select_batch(
    jax.random.key(0),
    *_args(prob),
    b=5,
    uniform_fraction=0.0,
    lr=0.05,
    l2=1e-2,
    inner_steps=3000,
    batch_size=None,
    cg_steps=30,
    loss_reduction="mean",
  )
  ref = reference.select(
    prob.pool_z,
    prob.pseudo,
    prob.labeled_idx,
    prob.labeled_labels,
    prob.pool_bank[prob.labeled_idx],
    prob.pool_bank,
    b=5,
    l2=1e-2,
    loss_reduction="mean",
  )
  np.testing.assert_array_equal(sel.indices, ref.indices)
  np.testing.assert_allclose(sel.scores, ref.scores, rtol=1e-4)
  # The picks are not decided by rounding: the runner-up is clearly behind at every step.
  for scores, pick in zip(ref.all_scores, ref.indices):
    rest = np.delete(scores, pick)
    assert scores[pick] - np.nanmax(rest) > 1e-3 * abs(scores[pick])
  assert np.all(np.asarray(sel.cg_residual) < 1e-8)
  np.testing.assert_allclose(sel.w, ref.ws[-1], atol=1e-5)


@pytest.mark.parametrize(
  "b,fraction,want", [(10, 0.1, (9, 1)), (5, 0.1, (5, 0)), (20, 0.1, (18, 2)), (4, 1.0, (0, 4))]
)
def test_split_batch(b, fraction, want):
  assert select.split_batch(b, fraction) == want


def test_invariants_and_determinism():
  prob = problems.make_problem(seed=1, p=30, n_labeled=4, dtype=np.float32)
  args = _args(prob)
  a = select.select_batch(jax.random.key(3), *args, b=10, **_FAST)
  again = select.select_batch(jax.random.key(3), *args, b=10, **_FAST)
  other = select.select_batch(jax.random.key(4), *args, b=10, **_FAST)
  idx = np.asarray(a.indices)
  assert idx.shape == (10,) and len(set(idx.tolist())) == 10
  assert not set(idx.tolist()) & set(prob.labeled_idx.tolist())
  assert np.all((idx >= 0) & (idx < 30))
  np.testing.assert_array_equal(a.is_bilevel, [True] * 9 + [False])
  for field in a._fields:
    np.testing.assert_array_equal(getattr(a, field), getattr(again, field))
  assert not np.array_equal(a.indices, other.indices)
  assert a.scores.shape == a.inner_loss.shape == a.outer_loss.shape == a.cg_residual.shape == (9,)
  assert np.all(np.isfinite(a.scores)) and np.all(np.isfinite(a.inner_loss))


def test_exhausts_pool_without_repeats():
  """b equal to the number of available points: every unlabeled point exactly once."""
  prob = problems.make_problem(seed=2, p=12, n_labeled=3, dtype=np.float32)
  sel = select.select_batch(jax.random.key(0), *_args(prob), b=9, uniform_fraction=0.3, **_FAST)
  want = sorted(set(range(12)) - set(prob.labeled_idx.tolist()))
  assert sorted(np.asarray(sel.indices).tolist()) == want


def test_compiles_once_for_same_shapes():
  prob = problems.make_problem(seed=3, p=20, n_labeled=3, dtype=np.float32)
  traces = []

  def counting_bank_fn(pool_bank, key, index):
    traces.append(1)  # runs at trace time only
    return pool_bank[index]

  args = list(_args(prob))
  args[5] = counting_bank_fn
  opts = dict(_FAST, b=4)
  select.select_batch(jax.random.key(0), *args, **opts)
  n_first = len(traces)
  assert n_first >= 1
  args[0] = args[0] + 0.5  # new feature values, same shape
  for lr, l2 in [(1e-2, 1e-3), (3e-3, 1e-4)]:  # traced hyperparameters
    opts.update(lr=lr, l2=l2)
    select.select_batch(jax.random.key(1), *args, **opts)
  assert len(traces) == n_first


def test_vmap_over_keys_equals_separate_calls(x64):
  # Batched matmuls round differently, and Adam's g / sqrt(v) on near-zero gradient entries
  # amplifies that (float32: ~2e-3 relative in the scores, float64: ~2e-6); the picks agree.
  prob = problems.make_problem(seed=4, p=20, n_labeled=3)
  args = _args(prob)
  keys = jax.random.split(jax.random.key(7), 2)
  batched = jax.vmap(lambda k: select.select_batch(k, *args, b=5, **_FAST))(keys)
  assert batched.indices.shape == (2, 5)
  for s in range(2):
    single = select.select_batch(keys[s], *args, b=5, **_FAST)
    np.testing.assert_array_equal(batched.indices[s], single.indices)
    np.testing.assert_allclose(batched.scores[s], single.scores, rtol=1e-4)


def _bad(prob, **changes):
  args = dict(
    zip(
      [
        "pool_z",
        "pseudo_labels",
        "labeled_idx",
        "labeled_labels",
        "labeled_bank",
        "bank_fn",
        "bank_params",
      ],
      _args(prob),
    )
  )
  opts = dict(_FAST, b=3)
  for k, v in changes.items():
    (args if k in args else opts)[k] = v
  return args, opts


_PROB = problems.make_problem(seed=5, p=10, n_labeled=3, dtype=np.float32)


def _nan_features():
  z = _PROB.pool_z.copy()
  z[4, 2] = np.nan
  return z


def _negative_pseudo():
  y = _PROB.pseudo.copy()
  y[2] = [1.2, -0.2, 0.0]
  return y


@pytest.mark.parametrize(
  "changes,match",
  [
    (dict(b=8), r"b=8 is larger than the 7 pool points available"),
    (dict(pseudo_labels=_PROB.pseudo * 1.1), r"rows must sum to 1"),
    (dict(pseudo_labels=_negative_pseudo()), r"row 2 has a negative entry"),
    (dict(pool_z=_nan_features()), r"pool_z has 1 NaN/inf entries \(first at index \[4, 2\]\)"),
    (dict(labeled_bank=np.full((3, 4, 5), np.inf, np.float32)), r"labeled_bank has 60 NaN/inf"),
    (dict(pseudo_labels=_PROB.pseudo[:9]), r"pseudo_labels must be \(P=10, c\)"),
    (dict(labeled_bank=_PROB.pool_bank[:2]), r"labeled_bank must be \(L=3, A, m=5\)"),
    (dict(labeled_labels=np.array([0, 1], np.int32)), r"labeled_labels must be \(L=3,\)"),
    (dict(labeled_labels=np.array([0, 1, 3], np.int32)), r"labeled_labels must lie in \[0, c=3\)"),
    (dict(labeled_idx=np.array([0, 1, 10], np.int32)), r"labeled_idx must lie in \[0, P=10\)"),
    (dict(labeled_idx=np.array([0, 1, 1], np.int32)), r"labeled_idx has duplicates: \[1\]"),
    (dict(labeled_idx=np.array([0.0, 1.0, 2.0])), r"labeled_idx must be integers"),
    (dict(bank_params=_PROB.pool_bank[:, :2]), r"must return \(A=4, m=5\)"),
    (dict(lr=-1.0), r"lr must be a finite scalar > 0"),
    (dict(batch_size=0), r"batch_size must be a positive int or None"),
    (dict(uniform_fraction=1.5), r"uniform_fraction must be in \[0, 1\]"),
    # Before the review: a scan carry TypeError from inside the compiled loop.
    (dict(pool_z=(10 * _PROB.pool_z).astype(np.int32)), r"pool_z must be floating point"),
    # Before the review: accepted; NaN scores, and argmax picked 0, 1, 3 (index order).
    (dict(w0=np.full((5, 3), np.nan, np.float32)), r"w0 has 15 NaN/inf entries"),
    # Before the review: an IndexError from pool_valid[labeled_idx].
    (
      dict(labeled_idx=np.array([0, 1, 10], np.int32), pool_valid=np.ones(10, bool)),
      r"labeled_idx must lie in \[0, P=10\)",
    ),
  ],
)
def test_bad_inputs_raise_clear_errors(changes, match):
  args, opts = _bad(_PROB, **changes)
  with pytest.raises(ValueError, match=match):
    select.select_batch(jax.random.key(0), **args, **opts)


def test_non_finite_scores_raise_instead_of_picking_by_index():
  """A bank_fn that returns NaN copies poisons the inner problem from the second greedy step on;
  argmax over NaN scores then returns the first available index. Before the review the call
  returned those picks silently."""
  prob = problems.make_problem(seed=5, p=10, n_labeled=3, dtype=np.float32)
  args = list(_args(prob))
  args[5] = _nan_bank
  with pytest.raises(FloatingPointError, match=r"greedy step 1 of 3 scored the pool with nan"):
    select.select_batch(jax.random.key(0), *args, b=3, uniform_fraction=0.0, **_FAST)
  # Under an outer jit the scores are traced: no check, the caller sees the NaN diagnostics.
  sel = jax.jit(lambda k: select.select_batch(k, *args, b=3, uniform_fraction=0.0, **_FAST))(
    jax.random.key(0)
  )
  assert np.isnan(np.asarray(sel.scores)[1:]).all()


def _nan_bank(pool_bank, key, index):
  del key
  return pool_bank[index] * jnp.nan


def test_host_bank_gives_same_picks_as_precomputed_bank():
  prob = problems.make_problem(seed=6, p=16, n_labeled=3, dtype=np.float32)
  args = list(_args(prob))
  calls = []

  def host_fn(index, key_data):
    calls.append(index)
    assert key_data.dtype == np.uint32
    return prob.pool_bank[index]

  want = select.select_batch(jax.random.key(2), *args, b=4, **_FAST)
  args[5:7] = select.HostBank(host_fn, 4, 5, jnp.float32), None
  got = select.select_batch(jax.random.key(2), *args, b=4, **_FAST)
  np.testing.assert_array_equal(got.indices, want.indices)
  assert calls == np.asarray(got.indices)[:4].tolist()


def test_exact_inner_solver_matches_reference_and_inner_loss_is_the_scored_problem(x64):
  """LBFGSSolver (inner_solver hook) reaches the inner minimiser: picks of the exact reference.
  inner_loss[k] is F at the k-th solve over the bank pick k was scored with (before it joins)."""
  prob = problems.make_problem(seed=0, p=24, n_labeled=3)
  sel = select.select_batch(
    jax.random.key(0),
    *_args(prob),
    b=5,
    uniform_fraction=0.0,
    l2=1e-2,
    cg_steps=30,
    inner_solver=inner.LBFGSSolver(60),
    loss_reduction="mean",
  )
  ref = reference.select(
    prob.pool_z,
    prob.pseudo,
    prob.labeled_idx,
    prob.labeled_labels,
    prob.pool_bank[prob.labeled_idx],
    prob.pool_bank,
    b=5,
    l2=1e-2,
    loss_reduction="mean",
  )
  np.testing.assert_array_equal(sel.indices, ref.indices)
  np.testing.assert_allclose(sel.scores, ref.scores, rtol=1e-6)
  c = prob.pseudo.shape[1]
  zs = [z for copies in prob.pool_bank[prob.labeled_idx] for z in copies]
  ys = [np.eye(c)[lab] for lab in prob.labeled_labels for _ in range(prob.pool_bank.shape[1])]
  want = []
  for w, pick in zip(ref.ws, ref.indices):
    want.append(reference.inner_objective(w, zs, ys, 1e-2))
    zs += list(prob.pool_bank[pick])
    ys += [prob.pseudo[pick]] * prob.pool_bank.shape[1]
  np.testing.assert_allclose(sel.inner_loss, want, rtol=1e-8)
  assert inner.LBFGSSolver(60) == inner.LBFGSSolver(60)  # one compilation per setting
  with pytest.raises(ValueError, match="iterations >= 1"):
    inner.LBFGSSolver(0)


def test_pool_valid_masks_padding_rows():
  """Padding rows that would win when unmasked: masked, the greedy picks are the unpadded
  pool's and no padding row is picked or drawn."""
  prob = problems.make_problem(seed=7, p=20, n_labeled=3, dtype=np.float32)
  args = _args(prob)
  kw = dict(b=6, **_FAST)
  base = select.select_batch(jax.random.key(2), *args, **kw)
  pad = 6
  z = np.concatenate([prob.pool_z, 4.0 * prob.pool_z[:pad]])
  y = np.concatenate([prob.pseudo, prob.pseudo[:pad]])
  pool_bank = np.concatenate([prob.pool_bank, 4.0 * prob.pool_bank[:pad]])
  bank_fn, params = select.precomputed_bank(pool_bank)
  padded = (
    z,
    y,
    prob.labeled_idx,
    prob.labeled_labels,
    prob.pool_bank[prob.labeled_idx],
    bank_fn,
    params,
  )
  valid = np.arange(20 + pad) < 20
  unmasked = select.select_batch(jax.random.key(2), *padded, **kw)
  assert np.max(unmasked.indices[:5]) >= 20  # the padding rows are attractive
  masked = select.select_batch(jax.random.key(2), *padded, pool_valid=valid, **kw)
  np.testing.assert_array_equal(masked.indices[:5], base.indices[:5])
  np.testing.assert_allclose(masked.outer_loss, base.outer_loss, rtol=1e-5)
  assert np.max(masked.indices) < 20
  with pytest.raises(ValueError, match="pool_valid must be"):
    select.select_batch(jax.random.key(2), *padded, pool_valid=valid[:5], **kw)
  with pytest.raises(ValueError, match="marked invalid"):
    select.select_batch(jax.random.key(2), *padded, pool_valid=np.arange(26) > 5, **kw)
