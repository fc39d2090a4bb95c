"""Greedy bilevel batch selection (paper Algorithm 1), one jitted program per call.

Per greedy step k (lax.fori_loop over a selection mask):
  1. the inner problem F over the bank (labeled copies + copies of the k points picked so far),
     warm-started from step k-1: solver="paper" runs fixed-step minibatch Adam (`inner.py`;
     `inner_solver` swaps in another solver), solver="exact" Newton-CG to a gradient tolerance
     (`exact.py`);
  2. v = H^-1 grad G with closed-form Hessian-vector products (`inner.bank_hvp_t`): "paper" by
     a fixed number of CG steps (`ihvp.cg_solve`), "exact" by Kronecker-preconditioned CG to a
     relative residual; G, grad G and the pool probabilities from one pass (`outer.py`);
  3. scores of the whole pool, argmax over points neither labeled nor picked;
  4. the picked point's augmented copies, `bank_fn(bank_params, key, index) -> (A, m)`, fill
     the next free slot of the fixed-capacity bank.
Then round(uniform_fraction * b) more points are drawn uniformly from the rest (paper: 10%).

The settings travel as one `settings.SelectionSettings`: shapes are static (bank capacity
L + n_bilevel) and lr / l2 / the exact mode's tolerances are traced, so repeated calls with the
same shapes, settings of the static options and `bank_fn` object reuse one compilation. F and G follow `loss_reduction` ("sum": the paper's Eq. 3, or
"mean"; see inner.py and outer.py).

Augmented copies come from a static `bank_fn(bank_params, key, index) -> (A, m)` (`banks.py`:
precomputed, made on the host, or computed inside the jit). The pieces of a greedy step are in
`greedy.py` (shared with the streamed selection of `scaling.streaming`).

vmap over seeds: the keys are the only batched argument, e.g.
  jax.vmap(lambda k: select_batch(k, pool_z, ...))(jax.random.split(key, S))
gives the same picks as S separate calls. Value checks run on concrete (non-traced) inputs;
traced inputs get shape checks only.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from bilevel_jax.bilevel import greedy
from bilevel_jax.bilevel.checks import SOLVERS  # noqa: F401
from bilevel_jax.bilevel.checks import SelectionInputs
from bilevel_jax.bilevel.checks import _check_finite  # noqa: F401
from bilevel_jax.bilevel.checks import check_label_rows  # noqa: F401
from bilevel_jax.bilevel.checks import _check_label_rows_on_device  # noqa: F401
from bilevel_jax.bilevel.checks import check_labeled  # noqa: F401
from bilevel_jax.bilevel.checks import check_settings  # noqa: F401
from bilevel_jax.bilevel.checks import validate_inputs  # noqa: F401
from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import outer
from bilevel_jax.bilevel import settings as settings_lib
from bilevel_jax.utils import tracing

# Re-exported: callers use select.<name> for the banks and the batch split.
from bilevel_jax.bilevel.banks import BankFn
from bilevel_jax.bilevel.banks import HostBank  # noqa: F401
from bilevel_jax.bilevel.banks import precomputed_bank  # noqa: F401
from bilevel_jax.bilevel.settings import SelectionSettings  # noqa: F401
from bilevel_jax.bilevel.greedy import split_batch  # noqa: F401
from bilevel_jax.bilevel.greedy import uniform_picks  # noqa: F401


class Selection(NamedTuple):
  """Result of `select_batch` (n = n_bilevel = b - round(uniform_fraction * b)).

  indices: (b,) int32 pool indices: the n greedy picks in order, then the uniform ones.
  is_bilevel: (b,) bool, True for greedy picks.
  scores: (n,) score of each greedy pick when it was chosen.
  inner_loss: (n,) F(w) after each inner solve, over the bank the pick was scored with.
  outer_loss: (n,) G(w) after each inner solve.
  cg_residual: (n,) relative inverse-HVP residual ||H v - grad G|| / ||grad G|| per step.
  w: (m, c) inner weights of the last inner solve.
  inner_grad_norm: (n,) ||grad F(w)|| (full bank) after each inner solve.
  inner_iterations: (n,) Adam steps or Newton steps of each inner solve.
  ihvp_iterations: (n,) CG iterations of each inverse-HVP.
  """

  indices: jax.Array
  is_bilevel: jax.Array
  scores: jax.Array
  inner_loss: jax.Array
  outer_loss: jax.Array
  cg_residual: jax.Array
  w: jax.Array
  inner_grad_norm: jax.Array | None = None
  inner_iterations: jax.Array | None = None
  ihvp_iterations: jax.Array | None = None


@functools.partial(jax.jit, static_argnames=("bank_fn", "n_bilevel", "n_uniform", "inner_solver"))
def _select(
  key,
  pool_z,
  pseudo_labels,
  labeled_idx,
  labeled_labels,
  labeled_bank,
  bank_params,
  w0,
  pool_valid,
  settings,
  *,
  bank_fn,
  n_bilevel,
  n_uniform,
  inner_solver,
):
  # settings: SelectionSettings with its floats as pool-dtype scalars (traced), the rest static.
  p, m = pool_z.shape
  c = pseudo_labels.shape[1]
  n_lab = labeled_bank.shape[0]
  dtype = pool_z.dtype
  reduction = settings.loss_reduction
  inner_key, bank_key, uniform_key = jax.random.split(key, 3)

  onehot = jax.nn.one_hot(labeled_labels, c, dtype=dtype)  # (L, c)
  targets = pseudo_labels.at[labeled_idx].set(onehot)  # (P, c) for G
  available = jnp.ones((p,), bool) if pool_valid is None else pool_valid
  available = available.at[labeled_idx].set(False)
  bank = greedy.init_bank(labeled_bank, onehot, n_bilevel, dtype)

  def greedy_step(k, carry):
    state, v_prev, bank, available, picks, diag = carry
    solve = greedy.solve_inner(k, state, bank, inner_key, settings, inner_solver=inner_solver)
    state = solve.state
    # The loop works on transposed (c, m) weights: see inner.xent_grad_t for why.
    wt = state.w.T
    g_val, g_grad_t, probs = outer.outer_value_grad_t(wt, pool_z, targets, pool_valid, reduction)
    cg, cg_iters = greedy.solve_ihvp(wt, bank, g_grad_t, v_prev, solve, settings)
    scores = outer.pool_scores_t(probs, cg.x, pool_z, pseudo_labels)  # (P,)
    best, i = greedy.best_pick(scores, available)
    # F of the inner problem this pick was scored with (before the pick joins the bank).
    f_val, f_grad = inner.bank_grad_t(wt, bank, settings.l2, reduction)
    copies = bank_fn(bank_params, jax.random.fold_in(bank_key, k), i).astype(dtype)  # (A, m)
    bank = greedy.add_to_bank(bank, n_lab + k, copies, pseudo_labels[i])
    row = jnp.stack(
      [
        best,
        f_val,
        g_val,
        cg.residual,
        jnp.sqrt(jnp.sum(f_grad * f_grad)),
        jnp.asarray(solve.iterations, dtype),
        jnp.asarray(cg_iters, dtype),
      ]
    )
    return (
      state,
      cg.x,
      bank,
      available.at[i].set(False),
      picks.at[k].set(i.astype(jnp.int32)),
      diag.at[k].set(row),
    )

  carry = (
    inner.init_inner_state(w0.astype(dtype)),
    jnp.zeros((c, m), dtype),
    bank,
    available,
    jnp.zeros((n_bilevel,), jnp.int32),
    jnp.zeros((n_bilevel, 7), dtype),
  )
  state, _, _, available, picks, diag = lax.fori_loop(0, n_bilevel, greedy_step, carry)

  if n_uniform:
    picks = jnp.concatenate([picks, greedy.uniform_picks(uniform_key, available, n_uniform, dtype)])
  is_bilevel = jnp.arange(n_bilevel + n_uniform) < n_bilevel
  return Selection(
    picks,
    is_bilevel,
    diag[:, 0],
    diag[:, 1],
    diag[:, 2],
    diag[:, 3],
    state.w,
    diag[:, 4],
    diag[:, 5].astype(jnp.int32),
    diag[:, 6].astype(jnp.int32),
  )


def select_batch(
  key: jax.Array,
  pool_z: jax.Array,
  pseudo_labels: jax.Array,
  labeled_idx: jax.Array,
  labeled_labels: jax.Array,
  labeled_bank: jax.Array,
  bank_fn: BankFn,
  bank_params: Any,
  *,
  b: int,
  uniform_fraction: float = 0.1,
  lr: float | jax.Array = 1e-3,
  l2: float | jax.Array = 1e-4,
  inner_steps: int = 1000,
  batch_size: int | None = 64,
  cg_steps: int = 30,
  w0: jax.Array | None = None,
  validate: bool = True,
  inner_solver: inner.InnerSolver | None = None,
  pool_valid: jax.Array | None = None,
  solver: str = "paper",
  loss_reduction: str = "sum",
  inner_tol: float | jax.Array = 1e-6,
  ihvp_rtol: float | jax.Array = 1e-4,
  inner_max_iter: int = 50,
  ihvp_max_iter: int = 1000,
  newton_cg_max_iter: int = 200,
) -> Selection:
  """Selects a batch of b pool points by the bilevel greedy rule (+ a uniform share).

  Args:
    key: PRNG key (minibatches, augmented copies, uniform share).
    pool_z: (P, m) clean Nystrom features of the whole training pool (labeled points included).
    pseudo_labels: (P, c) soft pseudo-labels (rows are distributions).
    labeled_idx: (L,) distinct pool indices of the labeled points, L >= 1.
    labeled_labels: (L,) their true classes in [0, c).
    labeled_bank: (L, A, m) features of A augmented copies of each labeled point.
    bank_fn: static `bank_fn(bank_params, key, index) -> (A, m)` copies of a picked point.
    bank_params: pytree of arrays used by bank_fn (traced).
    b: batch size; n_uniform = round(uniform_fraction * b) of it is uniform (b=10 -> 9 + 1).
    uniform_fraction: share drawn uniformly at random after the greedy picks (static).
    lr: Adam learning rate of the inner solver (traced; the paper does not state it, 1e-3 is
      the authors' published code).
    l2: lambda of the inner penalty l2 * ||w||^2 (traced), added to the data term of
      `loss_reduction`; the authors' code penalizes l2 / 2 * ||w||^2 (torch weight_decay) and
      fits a bias too (see docs/fidelity.md).
    inner_steps, batch_size: Adam steps per greedy step and pairs per minibatch (static);
      batch_size=None uses exact full-bank gradients.
    cg_steps: CG iterations for H^-1 grad G (static).
    w0: (m, c) initial inner weights, zeros by default (Algorithm 1 starts from a random w;
      the inner problem is strongly convex, so only the finite-step iterates depend on it).
    validate: run `validate_inputs` first (shapes on the host; finiteness and label rows of
      device arrays reduced on the device, only a few scalars fetched), and afterwards check
      that every greedy score is finite (`check_scores`: one host sync of the (n,) scores;
      skipped under an outer jit/vmap).
    inner_solver: static `solver(key, state, bank, lr, l2, *, steps, batch_size[, reduction])
      -> (InnerState, losses)` replacing the Adam of solver="paper" (`reduction` is passed
      unless it is "mean"); None (default) is `inner.fit_inner_steps`. `inner.LBFGSSolver(k)`
      runs k warm-started full-bank L-BFGS iterations (no tolerance: not necessarily the
      minimiser; solver="exact" solves to a tolerance).
    pool_valid: optional (P,) bool; False rows (e.g. padding of a sharded pool) are never
      scored, picked or drawn uniformly, and are left out of G.
    solver: "paper" (fixed-step Adam with lr / inner_steps / batch_size, cg_steps fixed CG
      steps) or "exact" (`exact.py`: Newton-CG to ||grad F|| <= inner_tol * ||grad F(0)||,
      at most inner_max_iter Newton steps of at most newton_cg_max_iter CG iterations each,
      warm-started; then preconditioned CG to residual ihvp_rtol, at most ihvp_max_iter
      iterations). Static; the tolerances are traced.
    loss_reduction: "sum" (the paper's Eq. 3: F sums over bank points the mean CE over their A
      copies, G sums over the pool) or "mean" (the project's first convention: F averages over
      the (point, copy) pairs, G over the pool). Static.

  Returns:
    Selection (indices (b,) and per-step diagnostics).
  """
  settings = settings_lib.SelectionSettings(
    uniform_fraction=uniform_fraction,
    lr=lr,
    l2=l2,
    inner_steps=inner_steps,
    batch_size=batch_size,
    cg_steps=cg_steps,
    solver=solver,
    loss_reduction=loss_reduction,
    inner_tol=inner_tol,
    ihvp_rtol=ihvp_rtol,
    inner_max_iter=inner_max_iter,
    ihvp_max_iter=ihvp_max_iter,
    newton_cg_max_iter=newton_cg_max_iter,
  )
  inputs = SelectionInputs(
    pool_z, pseudo_labels, labeled_idx, labeled_labels, labeled_bank, bank_fn, bank_params
  )
  return select_with_settings(
    key,
    inputs,
    b=b,
    settings=settings,
    w0=w0,
    validate=validate,
    inner_solver=inner_solver,
    pool_valid=pool_valid,
  )


def select_with_settings(
  key: jax.Array,
  inputs: SelectionInputs,
  *,
  b: int,
  settings: settings_lib.SelectionSettings,
  w0: jax.Array | None = None,
  validate: bool = True,
  inner_solver: inner.InnerSolver | None = None,
  pool_valid: jax.Array | None = None,
) -> Selection:
  """`select_batch` with its data as one `SelectionInputs` and its settings as one
  `SelectionSettings` (for callers that hold them, e.g. `scaling.sharding`); arguments and
  result as in `select_batch`."""
  if validate:
    validate_inputs(
      inputs, b=b, settings=settings, w0=w0, inner_solver=inner_solver, pool_valid=pool_valid
    )
  pool_z, pseudo_labels, labeled_idx, labeled_labels, labeled_bank, bank_fn, bank_params = inputs
  n_bilevel, n_uniform = greedy.split_batch(b, settings.uniform_fraction)
  pool_z = jnp.asarray(pool_z)
  dtype = pool_z.dtype
  if w0 is None:
    w0 = jnp.zeros((pool_z.shape[1], np.shape(pseudo_labels)[1]), dtype)
  sel = _select(
    key,
    pool_z,
    jnp.asarray(pseudo_labels, dtype),
    jnp.asarray(labeled_idx),
    jnp.asarray(labeled_labels),
    jnp.asarray(labeled_bank, dtype),
    bank_params,
    jnp.asarray(w0, dtype),
    None if pool_valid is None else jnp.asarray(pool_valid, bool),
    settings_lib.traced_as(settings, dtype),
    bank_fn=bank_fn,
    n_bilevel=n_bilevel,
    n_uniform=n_uniform,
    inner_solver=inner.fit_inner_steps if inner_solver is None else inner_solver,
  )
  if validate:
    check_scores(sel.scores)
  return sel


def check_scores(scores: jax.Array) -> None:
  """Raises FloatingPointError if a greedy score (n,) is NaN/inf (no-op on traced values).

  Scores are finite unless the inner solve, CG or a bank_fn produced NaN/inf; argmax over NaN
  then returns the first available index, so the picks would silently be 0, 1, 2, ...
  """
  s = tracing.concrete(scores)
  if s is not None and not np.all(np.isfinite(s)):
    k = int(np.argmin(np.isfinite(s)))
    raise FloatingPointError(
      f"greedy step {k} of {s.size} scored the pool with {s[k]}; its pick and the later ones "
      "are meaningless. Expected finite scores: check lr (the inner Adam may diverge), the "
      "copies bank_fn returns and the features."
    )
