"""Greedy bilevel selection whose inner problem also fits the confident pseudo-labeled pool.

Used by the `bilevel_ssl` strategy (variant (e) of issue 14); not the paper's Algorithm 1,
which fits only the labeled and picked points. With k points picked so far, L labeled:

  F(w) = 1 / (L + k) * [ sum_{labeled, picked i} (1/A) sum_a CE(w^T z_ia, y_i)
                         + alpha * sum_{q in Q_k} CE(w^T z_q, y~_q) ] + l2 ||w||^2

the mean convention of `inner.py` plus a term over Q_k: the pool points (neither labeled nor
picked) whose max pseudo-probability `confidence_q` is >= `threshold`, with their clean
features and soft pseudo-labels, each weighing alpha = ssl_weight * L / |Q_0| (the confident
set weighs `ssl_weight` times the labeled set). G, the scores z_x^T v (p_x - y~_x), the picked
points' copies and the uniform share are those of `select.select_batch`.

The confident points are slots of the same fixed-capacity `inner.Bank` (A identical copies of
the clean features and the label alpha * y~_q: CE is linear in the label, so a scaled label is
a weighted slot), so the inner solvers and `inner.bank_hvp_t` run unchanged. The bank averages
over its V valid slots: it is r * F with r = (L + k) / V once l2 is replaced by r * l2, the same
minimiser and a Hessian scaled by r, so the bank's scores are the scores of F divided by r (the
argmax is the same); the reported scores and F are those of F. The Adam minibatches are drawn
over all valid (slot, copy) pairs, confident slots included.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from bilevel_jax.bilevel import ihvp
from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import outer
from bilevel_jax.bilevel import select
from bilevel_jax.bilevel import settings as settings_lib


def confident_weights(
  confidence: jax.Array,
  labeled_mask: jax.Array,
  threshold: float,
  ssl_weight: float,
  n_labeled: int,
) -> jax.Array:
  """(P,) weight alpha of each pool point in F: ssl_weight * L / |Q| on the confident unlabeled
  points (confidence >= threshold), 0 elsewhere (and everywhere when no point is confident)."""
  conf = (confidence >= threshold) & ~labeled_mask
  count = jnp.sum(conf)
  alpha = ssl_weight * n_labeled / jnp.maximum(count, 1)
  return jnp.where(conf, alpha, 0.0).astype(confidence.dtype)


@functools.partial(jax.jit, static_argnames=("bank_fn", "n_bilevel", "n_uniform", "inner_solver"))
def _select(
  key,
  pool_z,
  pseudo_labels,
  confidence,
  labeled_idx,
  labeled_labels,
  labeled_bank,
  bank_params,
  settings,
  threshold,
  ssl_weight,
  *,
  bank_fn,
  n_bilevel,
  n_uniform,
  inner_solver,
):
  # settings: SelectionSettings, floats as pool-dtype scalars (traced), the rest static.
  lr, l2 = settings.lr, settings.l2
  p, m = pool_z.shape
  c = pseudo_labels.shape[1]
  n_lab, n_aug, _ = labeled_bank.shape
  dtype = pool_z.dtype
  inner_key, bank_key, uniform_key = jax.random.split(key, 3)

  onehot = jax.nn.one_hot(labeled_labels, c, dtype=dtype)
  targets = pseudo_labels.at[labeled_idx].set(onehot)  # (P, c) for G
  available = jnp.ones((p,), bool).at[labeled_idx].set(False)
  alpha = confident_weights(confidence, ~available, threshold, ssl_weight, n_lab)  # (P,)
  first_conf = n_lab + n_bilevel  # slot of pool row 0
  cap = first_conf + p
  bank = inner.Bank(
    z=jnp.zeros((cap, n_aug, m), dtype)
    .at[:n_lab]
    .set(labeled_bank.astype(dtype))
    .at[first_conf:]
    .set(jnp.broadcast_to(pool_z[:, None, :], (p, n_aug, m))),
    y=jnp.zeros((cap, c), dtype)
    .at[:n_lab]
    .set(onehot)
    .at[first_conf:]
    .set(alpha[:, None] * pseudo_labels),
    valid=(jnp.arange(cap) < n_lab).at[first_conf:].set(alpha > 0),
  )

  def greedy_step(k, carry):
    state, bank, available, picks, diag = carry
    r = (n_lab + k).astype(dtype) / jnp.sum(bank.valid).astype(dtype)  # bank = r * F
    l2_bank = r * l2
    state, _ = inner_solver(
      jax.random.fold_in(inner_key, k),
      state,
      bank,
      lr,
      l2_bank,
      steps=settings.inner_steps,
      batch_size=settings.batch_size,
    )
    wt = state.w.T
    g_val, g_grad_t, probs = outer.outer_value_grad_t(wt, pool_z, targets)
    cg = ihvp.cg_solve(inner.bank_hvp_t(wt, bank, l2_bank), g_grad_t, steps=settings.cg_steps)
    scores = r * outer.pool_scores_t(probs, cg.x, pool_z, pseudo_labels)
    masked = jnp.where(available, scores, -jnp.inf)
    i = jnp.argmax(masked)
    f_val = inner.bank_objective_t(wt, bank, l2_bank) / r
    copies = bank_fn(bank_params, jax.random.fold_in(bank_key, k), i).astype(dtype)
    # The pick joins with weight 1 and its A copies; it leaves the confident term.
    bank = inner.Bank(
      bank.z.at[n_lab + k].set(copies),
      bank.y.at[n_lab + k].set(pseudo_labels[i]),
      bank.valid.at[n_lab + k].set(True).at[first_conf + i].set(False),
    )
    row = jnp.stack([masked[i], f_val, g_val, cg.residual])
    return (
      state,
      bank,
      available.at[i].set(False),
      picks.at[k].set(i.astype(jnp.int32)),
      diag.at[k].set(row),
    )

  carry = (
    inner.init_inner_state(jnp.zeros((m, c), dtype)),
    bank,
    available,
    jnp.zeros((n_bilevel,), jnp.int32),
    jnp.zeros((n_bilevel, 4), dtype),
  )
  state, _, available, picks, diag = lax.fori_loop(0, n_bilevel, greedy_step, carry)
  if n_uniform:
    picks = jnp.concatenate([picks, select.uniform_picks(uniform_key, available, n_uniform, dtype)])
  is_bilevel = jnp.arange(n_bilevel + n_uniform) < n_bilevel
  return select.Selection(
    picks, is_bilevel, diag[:, 0], diag[:, 1], diag[:, 2], diag[:, 3], state.w
  ), jnp.sum(alpha > 0)


def select_batch_ssl(
  key: jax.Array,
  pool_z: jax.Array,
  pseudo_labels: jax.Array,
  confidence: jax.Array,
  labeled_idx: jax.Array,
  labeled_labels: jax.Array,
  labeled_bank: jax.Array,
  bank_fn: select.BankFn,
  bank_params: Any,
  *,
  b: int,
  threshold: float = 0.9,
  ssl_weight: float = 0.5,
  uniform_fraction: float = 0.1,
  lr: float = 1e-3,
  l2: float = 1e-4,
  inner_steps: int = 1000,
  batch_size: int | None = 64,
  cg_steps: int = 30,
  inner_solver: inner.InnerSolver | None = None,
) -> tuple[select.Selection, jax.Array]:
  """`select.select_batch` with the confident pool in the inner problem (module docstring).

  Args: those of `select.select_batch` (same shapes; no w0 / pool_valid), plus
    confidence: (P,) the pseudo-label confidence that decides membership of Q (e.g. the max
      class probability of the model's prediction).
    threshold: confident means confidence >= threshold (traced).
    ssl_weight: total weight of the confident set relative to the labeled set, >= 0 (traced;
      0 gives `select.select_batch`'s picks).

  Returns:
    (Selection, |Q_0| the number of confident pool points at the start) .
  """
  # The paper solver with the mean convention is the only one of this greedy loop.
  settings = settings_lib.SelectionSettings(
    uniform_fraction, lr, l2, inner_steps, batch_size, cg_steps, loss_reduction="mean"
  )
  inputs = select.SelectionInputs(
    pool_z, pseudo_labels, labeled_idx, labeled_labels, labeled_bank, bank_fn, bank_params
  )
  select.validate_inputs(inputs, b=b, settings=settings, inner_solver=inner_solver)
  if np.shape(confidence) != np.shape(pool_z)[:1]:
    raise ValueError(
      f"confidence must be (P={np.shape(pool_z)[0]},), got shape {np.shape(confidence)}."
    )
  for name, value in (("threshold", threshold), ("ssl_weight", ssl_weight)):
    if isinstance(value, (int, float)) and not (np.isfinite(value) and value >= 0):
      raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
  n_bilevel, n_uniform = select.split_batch(b, uniform_fraction)
  pool_z = jnp.asarray(pool_z)
  dtype = pool_z.dtype
  sel, n_conf = _select(
    key,
    pool_z,
    jnp.asarray(pseudo_labels, dtype),
    jnp.asarray(confidence, dtype),
    jnp.asarray(labeled_idx),
    jnp.asarray(labeled_labels),
    jnp.asarray(labeled_bank, dtype),
    bank_params,
    settings_lib.traced_as(settings, dtype),
    jnp.asarray(threshold, dtype),
    jnp.asarray(ssl_weight, dtype),
    bank_fn=bank_fn,
    n_bilevel=n_bilevel,
    n_uniform=n_uniform,
    inner_solver=inner.fit_inner_steps if inner_solver is None else inner_solver,
  )
  select.check_scores(sel.scores)
  return sel, n_conf
