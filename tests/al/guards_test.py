"""NaN and degenerate inputs on the AL path: errors naming round, strategy and input."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.al import guards
from bilevel_jax.al import loop
from bilevel_jax.al import outputs as outputs_lib
from tests.strategies.strategies_test import _context


@pytest.mark.parametrize(
  "field, index",
  [("probs", (3, 1)), ("features", (5, 2)), ("embeddings", (0, 0)), ("aug_probs", (2, 7, 1))],
)
def test_non_finite_inputs_raise_naming_round_strategy_and_input(field, index):
  ctx = _context(0)
  bad = getattr(ctx, field).at[index].set(jnp.nan)
  with pytest.raises(
    guards.NonFiniteError,
    match=rf"Round 3, strategy 'bilevel': .*RoundContext.{field}.* 1 NaN/inf "
    rf"entries \(first at index {list(index)}\)".replace("[", r"\["),
  ):
    guards.check_context(3, "bilevel", ctx._replace(**{field: bad}))


def test_all_zero_features_warn_for_the_strategy_that_reads_them():
  ctx = _context(0)
  zero = ctx._replace(features=jnp.zeros_like(ctx.features))
  with pytest.warns(guards.DegenerateInputWarning, match=r"Round 1, strategy 'bilevel'.*features"):
    guards.check_context(1, "bilevel", zero)
  with pytest.warns(guards.DegenerateInputWarning, match="embeddings"):
    guards.check_context(1, "kcenter", ctx._replace(embeddings=jnp.ones_like(ctx.embeddings)))
  import warnings  # pylint: disable=g-import-not-at-top

  with warnings.catch_warnings():
    warnings.simplefilter("error")
    guards.check_context(1, "uniform", zero)  # uniform does not read the features
    guards.check_context(1, "bilevel", ctx)


def test_non_finite_scores_raise_and_index_order_picks_warn():
  labeled = np.array([0, 2, 5])
  with pytest.raises(guards.NonFiniteError, match=r"Round 2, strategy 'bilevel'.*greedy pick 1"):
    guards.check_selection(
      2, "bilevel", np.array([1, 3, 4]), {"score": np.array([0.5, np.nan, np.nan])}, labeled
    )
  with pytest.warns(guards.DegenerateInputWarning, match=r"first pool points in index order"):
    # Greedy picks 1, 3, 4 (the first pool points), then one uniform pick.
    guards.check_selection(2, "bilevel", np.array([1, 3, 4, 9]), {"score": np.zeros(3)}, labeled)
  import warnings  # pylint: disable=g-import-not-at-top

  with warnings.catch_warnings():
    warnings.simplefilter("error")
    guards.check_selection(2, "uniform", np.array([7, 1, 9]), {}, labeled)


def test_nan_model_outputs_stop_the_al_loop(tmp_path, fsdd_root, monkeypatch):
  """Before: max_entropy ranked NaN entropies last and picked pool points by index; the round
  was written as if nothing happened."""
  real = outputs_lib.model_outputs

  def nan_outputs(*args, **kwargs):
    outs = real(*args, **kwargs)
    aug = outs.aug_probs.copy()
    aug[:, :, 0] = np.nan
    return outs._replace(aug_probs=aug)

  monkeypatch.setattr(outputs_lib, "model_outputs", nan_outputs)
  from tests.al.loop_test import _tiny  # pylint: disable=g-import-not-at-top

  with pytest.raises(
    guards.NonFiniteError,
    match=r"Round 0, strategy 'max_entropy': the model's predictions under "
    r"augmentation \(RoundContext.aug_probs",
  ):
    loop.run(_tiny(strategy="max_entropy"), tmp_path)
  assert not (tmp_path / "fsdd_max_entropy_seed0.json").exists()
  json.loads((tmp_path / "config.json").read_text())  # what was written is valid JSON
