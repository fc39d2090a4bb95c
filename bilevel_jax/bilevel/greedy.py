"""The pieces of one greedy step of the bilevel selection (paper Algorithm 1, see `select.py`).

Shared by the in-memory selection (`select._select`, traced inside its one jitted program) and
the streamed one (`scaling.streaming`, which calls the jitted `inner_step` / `ihvp_step` and
computes the pool's sums in chunks between them). Weights are carried transposed, (c, m) (see
`inner.xent_grad_t` for why); the inner state keeps w as (m, c).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from bilevel_jax.bilevel import exact
from bilevel_jax.bilevel import ihvp
from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel.settings import SelectionSettings


def split_batch(b: int, uniform_fraction: float) -> tuple[int, int]:
  """(n_bilevel, n_uniform) with n_uniform = round(uniform_fraction * b) (Python round)."""
  n_uniform = int(round(uniform_fraction * b))
  return b - n_uniform, n_uniform


def uniform_picks(key: jax.Array, available: jax.Array, n_uniform: int, dtype) -> jax.Array:
  """n_uniform distinct indices drawn uniformly at random among the True entries of
  `available` (P,) bool (the caller guarantees enough). Returns (n_uniform,) int32."""
  u = jnp.where(available, jax.random.uniform(key, available.shape, dtype), -1.0)
  return lax.top_k(u, n_uniform)[1].astype(jnp.int32)


def init_bank(labeled_bank: jax.Array, onehot: jax.Array, n_bilevel: int, dtype) -> inner.Bank:
  """The fixed-capacity bank: the labeled copies (L, A, m) with their one-hot labels (L, c),
  then n_bilevel empty slots for the picks."""
  n_lab, n_aug, m = labeled_bank.shape
  cap = n_lab + n_bilevel
  return inner.Bank(
    z=jnp.zeros((cap, n_aug, m), dtype).at[:n_lab].set(labeled_bank.astype(dtype)),
    y=jnp.zeros((cap, onehot.shape[1]), dtype).at[:n_lab].set(onehot),
    valid=jnp.arange(cap) < n_lab,
  )


def add_to_bank(bank: inner.Bank, slot, copies: jax.Array, y: jax.Array) -> inner.Bank:
  """The bank with a pick's copies (A, m) and pseudo-label (c,) in slot `slot`."""
  return inner.Bank(
    bank.z.at[slot].set(copies), bank.y.at[slot].set(y), bank.valid.at[slot].set(True)
  )


class InnerSolve(NamedTuple):
  """One inner solve: the warm-started state, its iteration count and, for solver="exact",
  the reduced problem and solution the inverse-HVP reuses (None otherwise)."""

  state: inner.InnerState
  iterations: Any  # int (paper: fixed steps) or () int32 (exact: Newton steps)
  exact: Any = None  # (newton solution wr, reduced bank) for solver="exact"


def solve_inner(
  k,
  state: inner.InnerState,
  bank: inner.Bank,
  inner_key: jax.Array,
  settings: SelectionSettings,
  *,
  inner_solver,
) -> InnerSolve:
  """Step 1 of greedy step k: F over the bank, warm-started from `state` (settings: lr, l2,
  solver, loss_reduction; inner_steps, batch_size for "paper"; inner_tol and the iteration caps
  for "exact")."""
  s = settings
  if s.solver == "exact":
    red = exact.reduce_bank(bank, s.loss_reduction)  # once per greedy step (bank is fixed)
    # Newton is warm-started from the previous step's w. (Starting from w0 instead took ~40%
    # fewer CG iterations on the anchor problem but swapped two picks of a float32 reference
    # case; the warm start with rotated coordinates is 0.78x the paper settings' time there.)
    newton = exact.newton_solve(
      exact.to_reduced(state.w.T, red),
      red,
      s.l2,
      tol=s.inner_tol,
      max_iter=s.inner_max_iter,
      cg_max_iter=s.newton_cg_max_iter,
    )
    state = inner.InnerState(exact.to_full(newton.wr, red).T, state.opt_state)
    return InnerSolve(state, newton.iterations, (newton.wr, red))
  kwargs = {} if s.loss_reduction == "mean" else {"reduction": s.loss_reduction}
  state, _ = inner_solver(
    jax.random.fold_in(inner_key, k),
    state,
    bank,
    s.lr,
    s.l2,
    steps=s.inner_steps,
    batch_size=s.batch_size,
    **kwargs,
  )
  return InnerSolve(state, s.inner_steps)


def solve_ihvp(
  wt: jax.Array,
  bank: inner.Bank,
  g_grad_t: jax.Array,
  v_prev: jax.Array,
  solve: InnerSolve,
  settings: SelectionSettings,
) -> tuple[ihvp.CGResult, Any]:
  """Step 2: v = H^-1 grad G (c, m) and the CG iterations, with the closed-form HVP of F at the
  inner solution wt (c, m) (settings: l2, solver, loss_reduction; cg_steps for "paper";
  ihvp_rtol, ihvp_max_iter for "exact"). The recorded residual is ||H v - grad G|| / ||grad G||
  of the full system."""
  s = settings
  hvp = inner.bank_hvp_t(wt, bank, s.l2, s.loss_reduction)
  if s.solver == "exact":
    wr, red = solve.exact
    cg = exact.inverse_hvp(
      wr, red, s.l2, g_grad_t, v_prev, rtol=s.ihvp_rtol, max_iter=s.ihvp_max_iter
    )
    # The recorded residual is the true one of the full system (one full-bank HVP).
    full_r = hvp(cg.x) - g_grad_t
    cg = cg._replace(
      residual=jnp.sqrt(
        jnp.sum(full_r * full_r)
        / jnp.maximum(jnp.sum(g_grad_t * g_grad_t), jnp.finfo(g_grad_t.dtype).tiny)
      )
    )
    return cg, cg.iterations
  return ihvp.cg_solve(hvp, g_grad_t, steps=s.cg_steps), s.cg_steps


def best_pick(scores: jax.Array, available: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Step 3: (score, index) of the best available point; scores, available: (P,)."""
  masked = jnp.where(available, scores, -jnp.inf)
  i = jnp.argmax(masked)
  return masked[i], i


# Jitted steps for callers that run the pool's sums outside one program (scaling.streaming);
# the settings' floats are traced, the rest static (settings.py).
inner_step = jax.jit(solve_inner, static_argnames=("inner_solver",))
ihvp_step = jax.jit(solve_ihvp)
