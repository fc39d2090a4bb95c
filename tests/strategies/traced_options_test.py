"""Float options of registered strategies are traced: new values never recompile."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax import strategies
from bilevel_jax.bilevel import select as bilevel_select
from bilevel_jax.strategies import base
from tests.strategies.strategies_test import _context


@pytest.fixture
def registry_entry():
  names = []
  yield names.append
  for n in names:
    base._REGISTRY.pop(n, None)


def test_float_options_are_traced_and_int_options_static(registry_entry):
  chex.clear_trace_counter()
  registry_entry("test_tempered")

  @strategies.register("test_tempered")
  @chex.assert_max_traces(n=2)
  def tempered(key, ctx, b, *, temperature: float = 1.0, offset: float = 0.0, top: int = 2):
    del key
    scores = jnp.sort(ctx.probs / temperature + offset, axis=-1)[:, -top:].sum(-1)
    return strategies.top_b_in_pool(scores, ctx.labeled_mask, b)

  ctx = _context(0)
  for t in (1.0, 0.5, 2.0, 3.0):
    strategies.select("test_tempered", jax.random.key(0), ctx, 3, temperature=t, offset=t / 10)
  strategies.select("test_tempered", jax.random.key(0), ctx, 3, top=3)  # a static option: one more
  with pytest.raises(AssertionError, match="traced"):  # and a third trace would be refused
    strategies.select("test_tempered", jax.random.key(0), ctx, 3, top=1)


def test_bilevel_lr_and_l2_do_not_recompile(monkeypatch):
  chex.clear_trace_counter()
  monkeypatch.setattr(
    bilevel_select, "select_batch", chex.assert_max_traces(bilevel_select.select_batch, n=1)
  )
  ctx = _context(1, n=20, e=6)
  opts = dict(inner_steps=5, batch_size=4, cg_steps=3, uniform_fraction=0.25)
  picks = []
  for lr, l2 in ((1e-2, 1e-3), (3e-2, 1e-3), (1e-2, 5e-4), (0.1, 0.0)):
    picks.append(
      np.asarray(strategies.select("bilevel", jax.random.key(2), ctx, 4, lr=lr, l2=l2, **opts))
    )
  assert all(p.shape == (4,) for p in picks)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "fast"])
def test_traced_options_are_checked_outside_the_jit(value):
  with pytest.raises(ValueError, match=r"Strategy 'bilevel': option lr="):
    strategies.select(
      "bilevel", jax.random.key(0), _context(0), 2, lr=value, inner_steps=2, cg_steps=1
    )


def test_static_options_must_name_parameters():
  with pytest.raises(ValueError, match=r"static_options \['nope'\]"):
    strategies.register("test_bad_static", static_options=("nope",))(
      lambda key, ctx, b, *, x=1.0: ctx.labeled_idx[:b]
    )
