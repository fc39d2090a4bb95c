"""Property tests for every registered strategy and reference tests for the baselines."""

from __future__ import annotations

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.metrics import pairwise_distances

from bilevel_jax import strategies
from bilevel_jax.strategies import base, baselines

_BASELINES = ("uniform", "max_entropy", "kcenter", "consistency")
_ALL = _BASELINES + ("bilevel",)
# Small inner problems keep the bilevel property tests fast.
_OPTIONS = {"bilevel": dict(inner_steps=10, batch_size=8, cg_steps=4)}


def _context(
  seed: int, n: int = 24, c: int = 4, e: int = 5, num_labeled: int = 6, k: int = 5
) -> strategies.RoundContext:
  """A random RoundContext with fixed keys; all optional fields filled."""
  rng = np.random.default_rng(seed)
  labeled_idx = rng.choice(n, num_labeled, replace=False).astype(np.int32)
  mask = np.zeros(n, bool)
  mask[labeled_idx] = True
  labels = np.where(mask, rng.integers(0, c, n), -1).astype(np.int32)
  logits = rng.normal(size=(k + 1, n, c)).astype(np.float32)
  probs = jax.nn.softmax(jnp.asarray(logits), axis=-1)
  return strategies.RoundContext(
    probs=probs[0],
    labeled_mask=jnp.asarray(mask),
    labeled_idx=jnp.asarray(labeled_idx),
    labels=jnp.asarray(labels),
    aug_probs=probs[1:],
    embeddings=jnp.asarray(rng.normal(size=(n, e)).astype(np.float32)),
    features=jnp.asarray(rng.normal(size=(n, e)).astype(np.float32)),
  )


class PropertyTest(parameterized.TestCase):
  @parameterized.product(name=_ALL, seed=(0, 1, 2), b=(1, 7))
  def test_valid_batch(self, name, seed, b):
    ctx = _context(seed)
    key = jax.random.key(seed)
    opts = _OPTIONS.get(name, {})
    picks = np.asarray(strategies.select(name, key, ctx, b, **opts))
    self.assertEqual(picks.shape, (b,))
    self.assertEqual(picks.dtype, np.int32)
    self.assertEqual(len(set(picks.tolist())), b, f"duplicates in {picks}")
    self.assertTrue(np.all((picks >= 0) & (picks < ctx.probs.shape[0])))
    self.assertFalse(np.any(np.asarray(ctx.labeled_mask)[picks]), f"labeled point in {picks}")
    again = np.asarray(strategies.select(name, key, ctx, b, **opts))
    np.testing.assert_array_equal(picks, again)

  @parameterized.parameters(*_ALL)
  def test_whole_pool(self, name):
    """b = pool size must return exactly the pool, even with tied scores."""
    ctx = _context(3, n=12, num_labeled=4)
    ctx = ctx._replace(
      aug_probs=jnp.full_like(ctx.aug_probs, 0.25),
      embeddings=jnp.zeros_like(ctx.embeddings),
      features=jnp.zeros_like(ctx.features),
    )
    picks = np.asarray(strategies.select(name, jax.random.key(0), ctx, 8, **_OPTIONS.get(name, {})))
    np.testing.assert_array_equal(np.sort(picks), np.flatnonzero(~np.asarray(ctx.labeled_mask)))

  @parameterized.parameters(*_ALL)
  def test_vmaps_over_seeds(self, name):
    ctxs = [_context(s) for s in range(3)]
    batched = jax.tree.map(lambda *xs: jnp.stack(xs), *ctxs)
    keys = jax.random.split(jax.random.key(0), 3)
    opts = _OPTIONS.get(name, {})
    fn = lambda k, c: strategies.get(name).select(k, c, 4, **opts)
    picks = jax.vmap(fn)(keys, batched)
    for s in range(3):
      np.testing.assert_array_equal(picks[s], strategies.select(name, keys[s], ctxs[s], 4, **opts))

  def test_batch_too_large_fails(self):
    ctx = _context(0, n=10, num_labeled=4)
    with self.assertRaisesRegex(ValueError, "pool size 6"):
      strategies.select("uniform", jax.random.key(0), ctx, 7)

  def test_unknown_strategy_fails(self):
    with self.assertRaisesRegex(ValueError, "Unknown strategy 'nope'.*uniform"):
      strategies.get("nope")

  def test_missing_inputs_fail(self):
    ctx = _context(0)._replace(aug_probs=None)
    with self.assertRaisesRegex(ValueError, "aug_probs"):
      strategies.select("consistency", jax.random.key(0), ctx, 2)

  def test_register_custom(self):
    self.addCleanup(base._REGISTRY.pop, "test_least_confident", None)  # keep the registry clean

    @strategies.register("test_least_confident")
    def least_confident(key, ctx, b):
      del key
      return strategies.top_b_in_pool(-ctx.probs.max(-1), ctx.labeled_mask, b)

    ctx = _context(0)
    picks = np.asarray(strategies.select("test_least_confident", jax.random.key(0), ctx, 3))
    conf = np.where(np.asarray(ctx.labeled_mask), np.inf, np.asarray(ctx.probs).max(-1))
    np.testing.assert_array_equal(np.sort(picks), np.sort(np.argsort(conf)[:3]))
    self.assertIn("test_least_confident", strategies.available())

  def test_top_b_ranks_every_pool_point_above_labeled_ones(self):
    """-inf, NaN and float64 scores below the float32 range still rank above labeled points."""
    mask = jnp.array([True, False, True, False, False, True])
    for scores in (
      jnp.array([5.0, -jnp.inf, 5.0, 1.0, jnp.nan, 5.0]),
      np.array([0.0, -1e300, 0.0, -1e300, 2.0, 0.0]),
    ):
      with np.errstate(over="ignore"):  # -1e300 -> float32 -inf is the point of the test
        picks = np.asarray(strategies.top_b_in_pool(scores, mask, 3))
      np.testing.assert_array_equal(np.sort(picks), [1, 3, 4])
    np.testing.assert_array_equal(
      strategies.top_b_in_pool(jnp.array([0.0, jnp.inf, 1.0, 2.0]), jnp.zeros(4, bool), 2), [1, 3]
    )

  def test_uniform_in_pool_avoids_exclude(self):
    mask = jnp.array([True, False, False, False, False, True])
    picks = strategies.uniform_in_pool(jax.random.key(0), mask, 2, exclude=jnp.array([1, 3]))
    np.testing.assert_array_equal(np.sort(picks), [2, 4])

  def test_inconsistent_labeled_mask_and_idx_fail(self):
    ctx = _context(0, n=10, num_labeled=4)
    mask = np.asarray(ctx.labeled_mask).copy()
    mask[np.flatnonzero(~mask)[:2]] = True  # two labeled points missing from labeled_idx
    bad = (
      ctx._replace(labeled_mask=jnp.asarray(mask)),
      ctx._replace(labeled_idx=ctx.labeled_idx.at[1].set(ctx.labeled_idx[0])),
      ctx._replace(labeled_idx=ctx.labeled_idx.at[0].set(10)),
    )
    for c in bad:
      with self.assertRaisesRegex(ValueError, "labeled_mask .* and labeled_idx .* disagree"):
        strategies.select("uniform", jax.random.key(0), c, 6)
    with self.assertRaisesRegex(ValueError, "labeled_mask must be bool"):
      strategies.select(
        "uniform",
        jax.random.key(0),
        ctx._replace(labeled_mask=ctx.labeled_mask.astype(jnp.int32)),
        2,
      )

  @parameterized.parameters(
    ("aug_probs", lambda c: c.aug_probs[:, :-1]),
    ("aug_probs", lambda c: c.aug_probs[..., :-1]),
    ("embeddings", lambda c: c.embeddings[:-1]),
    ("features", lambda c: c.features[None]),
    ("labels", lambda c: c.labels[:-1]),
    ("bank", lambda c: jnp.zeros((c.labeled_idx.shape[0] + 1, 2, 5))),
  )
  def test_context_shape_errors_name_the_field(self, field, corrupt):
    ctx = _context(0)
    ctx = ctx._replace(**{field: corrupt(ctx)})
    name = {"aug_probs": "consistency", "embeddings": "kcenter"}.get(field, "bilevel")
    with self.assertRaisesRegex(ValueError, f"RoundContext.{field} has shape"):
      strategies.select(name, jax.random.key(0), ctx, 2, **_OPTIONS.get(name, {}))

  @parameterized.parameters(
    ("labeled", "labeled among them"),
    ("duplicate", "distinct"),
    ("too_many", r"expected \(3,\)"),
    ("out_of_range", "outside"),
  )
  def test_faulty_custom_strategy_is_caught(self, fault, message):
    self.addCleanup(base._REGISTRY.pop, "test_faulty", None)

    @strategies.register("test_faulty")
    def faulty(key, ctx, b, *, fault):
      picks = strategies.uniform_in_pool(key, ctx.labeled_mask, b)
      if fault == "labeled":
        return picks.at[0].set(ctx.labeled_idx[0])
      if fault == "duplicate":
        return picks.at[1].set(picks[0])
      if fault == "too_many":
        return jnp.concatenate([picks, picks[:1]])
      return picks.at[0].set(ctx.labeled_mask.shape[0])

    with self.assertRaisesRegex(ValueError, f"'test_faulty' returned.*{message}"):
      strategies.select("test_faulty", jax.random.key(0), _context(0), 3, fault=fault)


class ReferenceTest(parameterized.TestCase):
  def test_max_entropy_matches_numpy(self):
    ctx = _context(5)
    p = np.asarray(ctx.aug_probs[:2]).mean(0)
    ent = -(p * np.log(p)).sum(-1)
    ent[np.asarray(ctx.labeled_mask)] = -np.inf
    want = np.argsort(-ent, kind="stable")[:6]
    got = strategies.select("max_entropy", jax.random.key(0), ctx, 6)
    np.testing.assert_array_equal(got, want)

  def test_consistency_matches_numpy(self):
    ctx = _context(6)
    p = np.asarray(ctx.aug_probs[:5], np.float64)
    score = ((p - p.mean(0)) ** 2).mean(0).sum(-1)
    chex.assert_trees_all_close(
      baselines.consistency_scores(ctx.aug_probs), score, rtol=1e-5, atol=1e-7
    )
    score[np.asarray(ctx.labeled_mask)] = -np.inf
    got = strategies.select("consistency", jax.random.key(0), ctx, 6)
    np.testing.assert_array_equal(got, np.argsort(-score, kind="stable")[:6])

  def test_entropy_edge_cases(self):
    chex.assert_trees_all_close(
      strategies.entropy(jnp.array([[1.0, 0.0], [0.5, 0.5]])),
      jnp.array([0.0, np.log(2.0)]),
      atol=1e-6,
    )

  @parameterized.parameters(0, 1, 2, 3)
  def test_kcenter_matches_slow_reference(self, seed):
    ctx = _context(seed, n=30, e=3, num_labeled=5)
    x = np.asarray(ctx.embeddings, np.float64)
    labeled = list(np.asarray(ctx.labeled_idx))
    dist = pairwise_distances(x, x[labeled]).min(axis=1)
    want = []
    for _ in range(8):
      d = dist.copy()
      d[labeled + want] = -np.inf
      pick = int(np.argmax(d))
      want.append(pick)
      dist = np.minimum(dist, pairwise_distances(x, x[[pick]])[:, 0])
    got = strategies.select("kcenter", jax.random.key(0), ctx, 8)
    np.testing.assert_array_equal(got, want)

  def test_kcenter_no_labeled_points(self):
    """Random first center, then farthest-first from the picks (slow reference)."""
    ctx = _context(0, n=10, num_labeled=0)
    picks = np.asarray(
      baselines.kcenter_greedy(
        jax.random.key(1), ctx.embeddings, ctx.labeled_mask, ctx.labeled_idx, 10
      )
    )
    np.testing.assert_array_equal(np.sort(picks), np.arange(10))
    x = np.asarray(ctx.embeddings, np.float64)
    want = [int(picks[0])]
    for _ in range(9):
      d = pairwise_distances(x, x[want]).min(axis=1)
      d[want] = -np.inf
      want.append(int(np.argmax(d)))
    np.testing.assert_array_equal(picks, want)

  def test_augmentation_counts_match_spec(self):
    """SPEC 4: max-entropy averages 2 augmentations, consistency uses the variance over 5."""
    self.assertEqual(strategies.get("max_entropy").augmentations, 2)
    self.assertEqual(strategies.get("consistency").augmentations, 5)
    self.assertEqual(strategies.get("uniform").augmentations, 0)
    self.assertTrue(strategies.get("kcenter").embeddings and strategies.get("bilevel").kernel)

  def test_uniform_is_uniform_over_pool(self):
    ctx = _context(0, n=12, num_labeled=4)
    keys = jax.random.split(jax.random.key(0), 3000)
    picks = jax.vmap(strategies.get("uniform").select, in_axes=(0, None, None))(keys, ctx, 2)
    counts = np.bincount(np.asarray(picks).ravel(), minlength=12)
    self.assertTrue(np.all(counts[np.asarray(ctx.labeled_mask)] == 0))
    pool_counts = counts[~np.asarray(ctx.labeled_mask)]
    # 6000 draws over 8 points: expected 750 each, std ~ 25.
    self.assertLess(np.abs(pool_counts - 750).max(), 120, pool_counts)
    self.assertFalse(np.array_equal(picks[0], picks[1]) and np.array_equal(picks[1], picks[2]))


class DiagnosticsTest(parameterized.TestCase):
  def test_custom_strategy_with_diagnostics(self):
    @strategies.register("test_with_diag", diagnostics=True)
    def with_diag(key, ctx, b, *, scale: float = 1.0):
      del key
      scores = scale * ctx.probs.max(-1)
      picks = strategies.top_b_in_pool(-scores, ctx.labeled_mask, b)
      return picks, {"picked_confidence": scores[picks]}

    ctx = _context(0)
    picks = strategies.select("test_with_diag", jax.random.key(0), ctx, 3, scale=2.0)
    again, diag = strategies.select_with_diagnostics(
      "test_with_diag", jax.random.key(0), ctx, 3, scale=2.0
    )
    np.testing.assert_array_equal(picks, again)
    np.testing.assert_allclose(diag["picked_confidence"], 2.0 * ctx.probs.max(-1)[picks])
    # Strategies without diagnostics give an empty dict.
    self.assertEqual(
      strategies.select_with_diagnostics("uniform", jax.random.key(0), ctx, 3)[1], {}
    )

  @parameterized.parameters(2, 3)
  def test_return_not_matching_the_diagnostics_flag_fails_clearly(self, b):
    """A strategy whose output does not match `diagnostics` fails naming itself and the flag
    (b=2 used to unpack a (2,) array into two scalar 'picks' and 'diagnostics')."""
    picks = lambda ctx, b: strategies.top_b_in_pool(ctx.probs.max(-1), ctx.labeled_mask, b)

    @strategies.register("test_forgot_diag", diagnostics=True)
    def forgot(key, ctx, b):
      del key
      return picks(ctx, b)

    @strategies.register("test_undeclared_diag")
    def undeclared(key, ctx, b):
      del key
      return picks(ctx, b), {"a": picks(ctx, b)}

    ctx = _context(0)
    for fn in (strategies.select, strategies.select_with_diagnostics):
      with self.assertRaisesRegex(
        TypeError,
        "'test_forgot_diag' is registered with "
        r"diagnostics=True.*returned an array of shape \(%d,\)" % b,
      ):
        fn("test_forgot_diag", jax.random.key(0), ctx, b)
      with self.assertRaisesRegex(
        TypeError, "'test_undeclared_diag' returned a tuple.*diagnostics=True"
      ):
        fn("test_undeclared_diag", jax.random.key(0), ctx, b)


class BilevelStrategyTest(parameterized.TestCase):
  def test_delegates_to_select_batch_with_bank(self):
    from bilevel_jax.bilevel import select as bilevel_select  # pylint: disable=g-import-not-at-top

    ctx = _context(4, n=20, num_labeled=5)
    rng = np.random.default_rng(0)
    pool_bank = jnp.asarray(rng.normal(size=(20, 3, 5)).astype(np.float32))  # (N, A, m)
    bank_fn, bank_params = bilevel_select.precomputed_bank(pool_bank)
    ctx = ctx._replace(bank=pool_bank[ctx.labeled_idx], bank_params=bank_params)
    opts = dict(inner_steps=15, batch_size=8, cg_steps=5)
    key = jax.random.key(7)
    got = strategies.select("bilevel", key, ctx, 10, bank_fn=bank_fn, **opts)
    want = bilevel_select.select_batch(
      key,
      ctx.features,
      ctx.probs,
      ctx.labeled_idx,
      ctx.labels[ctx.labeled_idx],
      ctx.bank,
      bank_fn,
      bank_params,
      b=10,
      **opts,
    )
    np.testing.assert_array_equal(got, want.indices)
    self.assertEqual(int(want.is_bilevel.sum()), 9)  # the paper's 90% / 10% split
    picks, diag = strategies.select_with_diagnostics(
      "bilevel", key, ctx, 10, bank_fn=bank_fn, **opts
    )
    np.testing.assert_array_equal(picks, want.indices)
    self.assertEqual(
      sorted(diag),
      [
        "cg_residual",
        "ihvp_iterations",
        "inner_grad_norm",
        "inner_iterations",
        "inner_loss",
        "outer_loss",
        "proxy_logits",
        "score",
      ],
    )
    np.testing.assert_allclose(diag["cg_residual"], want.cg_residual, rtol=1e-6)
    np.testing.assert_allclose(diag["proxy_logits"], ctx.features @ want.w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diag["inner_grad_norm"], want.inner_grad_norm, rtol=1e-5)
    # solver / loss_reduction reach select_batch
    exact_opts = dict(solver="exact", loss_reduction="mean")
    got_exact = strategies.select("bilevel", key, ctx, 10, bank_fn=bank_fn, **exact_opts)
    want_exact = bilevel_select.select_batch(
      key,
      ctx.features,
      ctx.probs,
      ctx.labeled_idx,
      ctx.labels[ctx.labeled_idx],
      ctx.bank,
      bank_fn,
      bank_params,
      b=10,
      **exact_opts,
    )
    np.testing.assert_array_equal(got_exact, want_exact.indices)
    np.testing.assert_allclose(diag["outer_loss"], want.outer_loss, rtol=1e-6)
    self.assertEqual(diag["score"].shape, (9,))

  def test_bank_without_bank_fn_fails(self):
    ctx = _context(4, n=20, num_labeled=5)
    ctx = ctx._replace(bank=jnp.zeros((5, 2, 5)))
    with self.assertRaisesRegex(ValueError, "bank_fn"):
      strategies.select("bilevel", jax.random.key(0), ctx, 3, inner_steps=2, cg_steps=2)

  def test_bank_fn_without_bank_fails(self):
    """bank_fn copies must not be silently replaced by clean features."""
    from bilevel_jax.bilevel import select as bilevel_select  # pylint: disable=g-import-not-at-top

    ctx = _context(4, n=20, num_labeled=5)
    bank_fn, _ = bilevel_select.precomputed_bank(jnp.zeros((20, 3, 5)))
    with self.assertRaisesRegex(ValueError, "bank_fn option but RoundContext.bank is None"):
      strategies.select(
        "bilevel", jax.random.key(0), ctx, 3, bank_fn=bank_fn, inner_steps=2, cg_steps=2
      )
