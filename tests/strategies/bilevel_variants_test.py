"""bilevel_tempered / bilevel_embed / bilevel_ssl against slow NumPy references (small problems)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax import strategies
from bilevel_jax.bilevel import reference
from bilevel_jax.bilevel import select
from bilevel_jax.bilevel import semi_supervised
from bilevel_jax.strategies import bilevel_variants
from tests.bilevel import problems

# Full-batch Adam run to convergence: the deterministic setting in which select_batch matches
# the Newton + dense-solve reference (tests/bilevel/select_test.py).
_EXACT = dict(
  uniform_fraction=0.0, lr=0.05, l2=1e-2, inner_steps=3000, batch_size=None, cg_steps=30
)
# Adam stops within ~1% of the Newton optimum on the softer problems (T = 2), so scores are
# compared at 1%; the picks must be identical.
_SCORE_RTOL = 1e-2


def _context(prob, probs=None, **fields):
  n = prob.pool_z.shape[0]
  mask = np.zeros(n, bool)
  mask[prob.labeled_idx] = True
  labels = np.where(mask, prob.classes, -1).astype(np.int32)
  return strategies.RoundContext(
    probs=jnp.asarray(prob.pseudo if probs is None else probs),
    labeled_mask=jnp.asarray(mask),
    labeled_idx=jnp.asarray(prob.labeled_idx),
    labels=jnp.asarray(labels),
    **fields,
  )


def _kernel_context(prob, probs=None):
  bank_fn, params = select.precomputed_bank(prob.pool_bank)
  ctx = _context(
    prob,
    probs,
    features=jnp.asarray(prob.pool_z),
    bank=jnp.asarray(prob.pool_bank[prob.labeled_idx]),
    bank_params=params,
  )
  return ctx, bank_fn


def _ref(prob, pool_z, pool_bank, pseudo, b=5, l2=1e-2):
  # The mean convention: the only one bilevel_ssl's loop has, and the one in which the
  # full-batch Adam of _EXACT reaches the minimiser closely enough for these comparisons.
  return reference.select(
    pool_z,
    pseudo,
    prob.labeled_idx,
    prob.labeled_labels,
    pool_bank[prob.labeled_idx],
    pool_bank,
    b=b,
    l2=l2,
    loss_reduction="mean",
  )


def test_tempered_is_the_power_rule_and_one_is_identity():
  rng = np.random.default_rng(0)
  p = rng.dirichlet(np.ones(4), size=6)
  p[0, 2] = 0.0
  p[0] /= p[0].sum()
  p32 = jnp.asarray(p, jnp.float32)
  np.testing.assert_array_equal(bilevel_variants.tempered(p32, 1.0), p32)
  for t in (0.25, 0.5, 2.0, 10.0):
    want = p ** (1 / t) / np.sum(p ** (1 / t), axis=1, keepdims=True)
    np.testing.assert_allclose(
      bilevel_variants.tempered(jnp.asarray(p, jnp.float32), t), want, rtol=2e-5, atol=1e-7
    )
  assert float(bilevel_variants.tempered(jnp.asarray(p, jnp.float32), 10.0)[0, 2]) == 0.0


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_tempered_matches_reference_on_tempered_pseudo_labels(x64, temperature):
  prob = problems.make_problem(seed=0, p=24, n_labeled=3)
  ctx, bank_fn = _kernel_context(prob)
  picks, diag = strategies.select_with_diagnostics(
    "bilevel_tempered",
    jax.random.key(0),
    ctx,
    5,
    bank_fn=bank_fn,
    pseudo_temperature=temperature,
    loss_reduction="mean",
    **_EXACT,
  )
  sharp = prob.pseudo ** (1 / temperature)
  ref = _ref(prob, prob.pool_z, prob.pool_bank, sharp / sharp.sum(1, keepdims=True))
  np.testing.assert_array_equal(picks, ref.indices)
  np.testing.assert_allclose(diag["score"], ref.scores, rtol=_SCORE_RTOL)
  # The temperature matters on this problem, and T = 1 is the paper's strategy exactly.
  assert not np.array_equal(
    ref.indices, _ref(prob, prob.pool_z, prob.pool_bank, prob.pseudo).indices
  )
  fast = dict(inner_steps=20, batch_size=8, cg_steps=5)
  np.testing.assert_array_equal(
    strategies.select(
      "bilevel_tempered", jax.random.key(1), ctx, 4, bank_fn=bank_fn, pseudo_temperature=1.0, **fast
    ),
    strategies.select("bilevel", jax.random.key(1), ctx, 4, bank_fn=bank_fn, **fast),
  )


def _embedding_problem(seed=0, n=24, e=5, k=4, c=3, n_labeled=3):
  """Embeddings with per-dimension offsets and scales (standardization matters)."""
  prob = problems.make_problem(seed=seed, p=n, m=e, c=c, a=k, n_labeled=n_labeled)
  rng = np.random.default_rng(seed + 100)
  offset, scale = rng.normal(size=e) * 3, np.exp(rng.normal(size=e))
  emb = prob.pool_z * scale + offset
  aug = np.swapaxes(prob.pool_bank, 0, 1) * scale + offset  # (K, N, E)
  return prob, emb, aug


def _embed_context(prob, emb, aug):
  return _context(
    prob,
    embeddings=jnp.asarray(emb),
    aug_embeddings=jnp.asarray(aug),
    aug_probs=jnp.asarray(np.broadcast_to(prob.pseudo, (4,) + prob.pseudo.shape)),
  )


def test_embed_matches_reference_on_standardized_embeddings(x64):
  prob, emb, aug = _embedding_problem()
  ctx = _embed_context(prob, emb, aug)
  picks, diag = strategies.select_with_diagnostics(
    "bilevel_embed", jax.random.key(0), ctx, 5, augmentations=3, loss_reduction="mean", **_EXACT
  )
  mean, std = emb.mean(0), emb.std(0)
  z = (emb - mean) / std
  bank = np.swapaxes((aug[:3] - mean) / std, 0, 1)  # (N, 3, E)
  ref = _ref(prob, z, bank, prob.pseudo)
  np.testing.assert_array_equal(picks, ref.indices)
  np.testing.assert_allclose(diag["score"], ref.scores, rtol=_SCORE_RTOL)
  # Standardization is per dimension: a constant dimension is centred, not divided by 0.
  z0 = bilevel_variants.standardize(jnp.asarray(np.c_[emb, np.full(len(emb), 2.0)]))[0]
  np.testing.assert_array_equal(z0[:, -1], 0.0)


def test_embed_exact_sum_matches_reference(x64):
  """The configuration of the full comparison (issue 14): exact solver, the paper's sum."""
  prob, emb, aug = _embedding_problem(seed=1)
  ctx = _embed_context(prob, emb, aug)
  picks, diag = strategies.select_with_diagnostics(
    "bilevel_embed",
    jax.random.key(0),
    ctx,
    5,
    augmentations=3,
    solver="exact",
    loss_reduction="sum",
    uniform_fraction=0.0,
    l2=1e-2,
  )
  mean, std = emb.mean(0), emb.std(0)
  bank = np.swapaxes((aug[:3] - mean) / std, 0, 1)  # (N, 3, E)
  ref = reference.select(
    (emb - mean) / std,
    prob.pseudo,
    prob.labeled_idx,
    prob.labeled_labels,
    bank[prob.labeled_idx],
    bank,
    b=5,
    l2=1e-2,
    loss_reduction="sum",
  )
  np.testing.assert_array_equal(picks, ref.indices)
  # Newton-CG stops at ||grad F|| <= 1e-6 ||grad F(0)|| (inner_tol), so scores agree to ~1e-6.
  np.testing.assert_allclose(diag["score"], ref.scores, rtol=1e-5)


def test_embed_needs_augmented_embeddings():
  prob, emb, _ = _embedding_problem()
  ctx = _context(
    prob,
    embeddings=jnp.asarray(emb, jnp.float32),
    aug_probs=jnp.asarray(np.broadcast_to(prob.pseudo, (4,) + prob.pseudo.shape), jnp.float32),
    probs=prob.pseudo.astype(np.float32),
  )
  with pytest.raises(ValueError, match="aug_embeddings with K >= 4"):
    strategies.select("bilevel_embed", jax.random.key(0), ctx, 3)


def _ssl_reference(prob, *, threshold, ssl_weight, b, l2):
  """Greedy with the weighted inner problem of semi_supervised.py, written out: per point a
  weight, Newton to tight tolerance, dense Hessian solve, scores by loops."""
  pool_z, pseudo = prob.pool_z, prob.pseudo
  p, m = pool_z.shape
  c = pseudo.shape[1]
  labeled = [int(i) for i in prob.labeled_idx]
  conf = [q for q in range(p) if q not in labeled and pseudo[q].max() >= threshold]
  alpha = ssl_weight * len(labeled) / max(len(conf), 1)
  targets = pseudo.copy()
  targets[labeled] = np.eye(c)[prob.labeled_labels]
  # rows: (feature, label, weight before the 1 / (L + k) normalisation)
  rows = [
    (z, np.eye(c)[y], 1 / prob.pool_bank.shape[1])
    for i, y in zip(labeled, prob.labeled_labels)
    for z in prob.pool_bank[i]
  ]
  picks, scores = [], []
  w = np.zeros((m, c))

  def objective(w, rows, norm):
    return sum(wt * reference.point_loss(w, z, y) for z, y, wt in rows) / norm + l2 * np.sum(w * w)

  for k in range(b):
    norm = len(labeled) + k
    all_rows = rows + [(pool_z[q], pseudo[q], alpha) for q in conf if q not in picks]
    for _ in range(100):  # damped Newton
      g = (
        sum(wt * reference.point_grad(w, z, y) for z, y, wt in all_rows) / norm + 2 * l2 * w.ravel()
      )
      h = sum(wt * reference.point_hessian(w, z) for z, _, wt in all_rows) / norm + 2 * l2 * np.eye(
        m * c
      )
      if np.linalg.norm(g) < 1e-12:
        break
      step, t, f0 = np.linalg.solve(h, g).reshape(w.shape), 1.0, objective(w, all_rows, norm)
      while (
        objective(w - t * step, all_rows, norm) > f0 - 0.25 * t * g @ step.ravel() and t > 1e-10
      ):
        t *= 0.5
      w = w - t * step
    v = np.linalg.solve(h, reference.outer_grad(w, pool_z, targets))
    s = np.array(
      [
        -np.inf if x in labeled or x in picks else reference.point_grad(w, pool_z[x], pseudo[x]) @ v
        for x in range(p)
      ]
    )
    best = int(np.argmax(s))
    picks.append(best)
    scores.append(s[best])
    rows += [(z, pseudo[best], 1 / prob.pool_bank.shape[1]) for z in prob.pool_bank[best]]
  return np.array(picks), np.array(scores), len(conf)


def test_ssl_matches_weighted_reference(x64):
  prob = problems.make_problem(seed=2, p=24, n_labeled=3)
  threshold = float(np.quantile(prob.pseudo.max(1), 0.6))  # ~9 confident pool points
  ctx, bank_fn = _kernel_context(prob)
  picks, diag = strategies.select_with_diagnostics(
    "bilevel_ssl",
    jax.random.key(0),
    ctx,
    5,
    bank_fn=bank_fn,
    ssl_threshold=threshold,
    ssl_weight=2.0,
    **_EXACT,
  )
  want, want_scores, n_conf = _ssl_reference(
    prob, threshold=threshold, ssl_weight=2.0, b=5, l2=1e-2
  )
  assert n_conf >= 5
  np.testing.assert_array_equal(picks, want)
  np.testing.assert_allclose(diag["score"], want_scores, rtol=_SCORE_RTOL)
  np.testing.assert_array_equal(diag["num_confident"], n_conf)
  # The confident term changes the picks here; with weight 0 they are the paper's.
  assert not np.array_equal(want, _ref(prob, prob.pool_z, prob.pool_bank, prob.pseudo).indices)
  zero = strategies.select(
    "bilevel_ssl",
    jax.random.key(0),
    ctx,
    5,
    bank_fn=bank_fn,
    ssl_threshold=threshold,
    ssl_weight=0.0,
    **_EXACT,
  )
  np.testing.assert_array_equal(zero, _ref(prob, prob.pool_z, prob.pool_bank, prob.pseudo).indices)


def test_ssl_weights_and_errors():
  conf = jnp.array([0.95, 0.5, 0.99, 0.92, 0.3])
  labeled = jnp.array([False, False, True, False, False])
  w = semi_supervised.confident_weights(conf, labeled, 0.9, 0.5, 4)
  np.testing.assert_allclose(w, [1.0, 0, 0, 1.0, 0])  # 0.5 * 4 labeled / 2 confident
  np.testing.assert_array_equal(semi_supervised.confident_weights(conf, labeled, 1.0, 0.5, 4), 0)
  prob = problems.make_problem(seed=1, p=20, n_labeled=3, dtype=np.float32)
  bank_fn, params = select.precomputed_bank(prob.pool_bank)
  args = (
    prob.pool_z,
    prob.pseudo,
    prob.pseudo.max(1)[:5],
    prob.labeled_idx,
    prob.labeled_labels,
    prob.pool_bank[prob.labeled_idx],
    bank_fn,
    params,
  )
  with pytest.raises(ValueError, match=r"confidence must be \(P=20,\)"):
    semi_supervised.select_batch_ssl(jax.random.key(0), *args, b=3)


@pytest.mark.parametrize("name", ["bilevel_tempered", "bilevel_embed", "bilevel_ssl"])
def test_valid_distinct_unlabeled_picks_with_the_paper_settings(name):
  """Minibatch Adam + few CG steps (float32): b distinct pool points, deterministic per key."""
  prob, emb, aug = _embedding_problem(seed=3, n=30, n_labeled=4)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  bank_fn, params = select.precomputed_bank(f32(prob.pool_bank))
  ctx = _context(
    prob,
    probs=prob.pseudo.astype(np.float32),
    features=f32(prob.pool_z),
    bank=f32(prob.pool_bank[prob.labeled_idx]),
    bank_params=params,
    embeddings=f32(emb),
    aug_embeddings=f32(aug),
    aug_probs=f32(np.broadcast_to(prob.pseudo, (4,) + prob.pseudo.shape)),
  )
  opts = dict(inner_steps=30, batch_size=8, cg_steps=5, pseudo_temperature=0.5)
  if name != "bilevel_embed":
    opts["bank_fn"] = bank_fn
  picks, diag = strategies.select_with_diagnostics(name, jax.random.key(0), ctx, 10, **opts)
  picks = np.asarray(picks)
  assert len(set(picks.tolist())) == 10 and not set(picks) & set(prob.labeled_idx.tolist())
  assert diag["score"].shape == (9,) and np.all(np.isfinite(diag["score"]))
  assert diag["proxy_logits"].shape == (30, 3)  # the proxy, for the loop's pick diagnostics
  again = strategies.select_with_diagnostics(name, jax.random.key(0), ctx, 10, **opts)[0]
  np.testing.assert_array_equal(picks, again)


def test_options_follow_bilevel_and_configs_are_checked():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bilevel_jax.strategies import inputs  # pylint: disable=g-import-not-at-top
  from experiments.configs import fsdd  # pylint: disable=g-import-not-at-top

  paper = set(strategies.get("bilevel").options)
  assert paper | {"pseudo_temperature"} == set(strategies.get("bilevel_tempered").options)
  assert (paper - {"bank_fn"}) | {"augmentations", "pseudo_temperature"} == set(
    strategies.get("bilevel_embed").options
  )
  for mode in fsdd.MODES:
    c = fsdd.get_config(mode)
    for name in ("bilevel_tempered", "bilevel_ssl", "bilevel_embed"):
      inputs.check_config(name, c)
      # Every selection entry of the variant's block is one of its options (inner_batch_size
      # is the option batch_size).
      block = set(c[name]) - {
        "landmarks",
        "landmark_seed",
        "kernel",
        "kernel_chunk",
        "augmentations",
        "inner_batch_size",
      }
      assert "batch_size" in strategies.get(name).options
      if name == "bilevel_ssl":  # its config check accepts only the paper solver and mean
        block -= {"solver", "loss_reduction"}
      assert {k for k in block if not k.startswith("ntk_")} <= set(strategies.get(name).options), (
        name
      )
  c = fsdd.get_config("tiny")
  for name, entry, value, message in (
    ("bilevel_tempered", "pseudo_temperature", 0.0, "pseudo_temperature=0.0"),
    ("bilevel_ssl", "ssl_threshold", 1.5, "ssl_threshold=1.5"),
    ("bilevel_ssl", "ssl_weight", -1.0, "ssl_weight=-1.0"),
    ("bilevel_embed", "augmentations", 5, "augmentations=5"),
  ):
    bad = ml_collections.ConfigDict(c.to_dict())
    bad[name][entry] = value
    with pytest.raises(ValueError, match=message):
      inputs.check_config(name, bad)
  bad = ml_collections.ConfigDict(c.to_dict())
  bad.bilevel_ssl.solver = "exact"
  with pytest.raises(ValueError, match="only solver='paper'"):
    inputs.check_config("bilevel_ssl", bad)


@pytest.mark.parametrize("name", ["bilevel_ssl", "bilevel_tempered"])
def test_kernel_prepare_passes_only_the_variants_own_options(monkeypatch, name):
  """The NTK variants build their inputs with bilevel's prepare hook, whose options include
  bilevel-only ones (solver, loss_reduction for bilevel_ssl); the jitted variant must not get
  them (a string option it does not declare is taken as a traced array and fails)."""
  from bilevel_jax.strategies import bilevel as paper  # pylint: disable=g-import-not-at-top
  from bilevel_jax.strategies import inputs  # pylint: disable=g-import-not-at-top
  from experiments.configs import fsdd  # pylint: disable=g-import-not-at-top

  every = {k: 0 for k in strategies.get("bilevel").options}
  every.update(solver="paper", loss_reduction="mean")
  monkeypatch.setattr(paper, "prepare", lambda block, data, progress=False: inputs.Prepared(every))
  c = fsdd.get_config("tiny")
  options = strategies.get(name).prepare(c[name], data=None).options
  assert set(options) <= set(strategies.get(name).options)
  assert ("loss_reduction" in options) == ("loss_reduction" in strategies.get(name).options)
