"""The paper's strategy: greedy bilevel selection (90%) plus a uniform share (10%).

Delegates to `bilevel_jax.bilevel.select.select_batch`; pseudo-labels are the model's soft
predictions `ctx.probs` on the whole training set and the proxy features are `ctx.features`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from bilevel_jax.bilevel import select as bilevel_select
from bilevel_jax.strategies import base


def clean_copy_bank_fn(features: jax.Array, key: jax.Array, index: jax.Array) -> jax.Array:
  """Bank function without augmentation: one copy, the clean features. Returns (1, m)."""
  del key
  return features[index][None]


@base.register("bilevel", kernel=True, diagnostics=True, static_options=("uniform_fraction",))
def bilevel(key: jax.Array, ctx: base.RoundContext, b: int, *, bank_fn: Any = None,
            uniform_fraction: float = 0.1, lr: float = 1e-3, l2: float = 1e-4,
            inner_steps: int = 1000, batch_size: int | None = 64,
            cg_steps: int = 30) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Bilevel greedy picks followed by round(uniform_fraction * b) uniform ones.

  Returns the (b,) indices and, per greedy pick (n,), its `score`, the `inner_loss` F and
  `outer_loss` G after its inner solve and the relative `cg_residual` of its inverse-HVP.

  Uses ctx.features (N, m), ctx.probs (N, C) as pseudo-labels, the labeled bank ctx.bank
  (L, A, m) and `bank_fn(ctx.bank_params, key, index) -> (A, m)` for the copies of picked
  points. Without a bank, every point enters the inner problem with its clean features only.
  """
  labeled_labels = ctx.labels[ctx.labeled_idx]
  if ctx.bank is None:
    if bank_fn is not None:
      # Otherwise the copies bank_fn would make are silently replaced by clean features.
      raise ValueError("The bilevel strategy got a bank_fn option but RoundContext.bank is None; "
                       "expected ctx.bank (L, A, m) with the labeled points' augmented copies.")
    bank = ctx.features[ctx.labeled_idx][:, None, :]
    bank_fn, bank_params = clean_copy_bank_fn, ctx.features
  else:
    if bank_fn is None:
      raise ValueError("RoundContext.bank is set, so the bilevel strategy needs a bank_fn option "
                       "that makes the copies of picked points.")
    bank, bank_params = ctx.bank, ctx.bank_params
  selection = bilevel_select.select_batch(
      key, ctx.features, ctx.probs.astype(ctx.features.dtype), ctx.labeled_idx,
      labeled_labels, bank, bank_fn, bank_params, b=b, uniform_fraction=uniform_fraction,
      lr=lr, l2=l2, inner_steps=inner_steps, batch_size=batch_size, cg_steps=cg_steps)
  diagnostics = {"score": selection.scores, "inner_loss": selection.inner_loss,
                 "outer_loss": selection.outer_loss, "cg_residual": selection.cg_residual}
  return selection.indices.astype(jnp.int32), diagnostics
