"""Bilevel greedy selection in the representer-theorem formulation of Borsos et al. 2020.

"Coresets via bilevel optimization for continual learning and streaming" (arXiv 2006.03875)
writes the inner model as a kernel expansion over its support, f(x) = sum_t k(x, t) alpha_t,
instead of a weight vector on features. Here the support is every (slot, copy) pair of the
bank T (labeled points and the picks so far, A augmented copies each) plus the candidates C,
and the kernel is the one the Nystrom features define, k(x, x') = z_x . z_x', so both
formulations fit the same function class and, at the inner optimum, the same function:
w = Z_T^T alpha_T.

At equal settings to `bilevel_jax.bilevel.select` (same keys, same minibatch draws, lr, l2,
Adam steps, CG steps, 90% greedy + 10% uniform):
  inner  F(alpha) = mean_pairs CE(K_{tT} alpha_T, y_t) + l2 * tr(alpha_T^T K_TT alpha_T),
         Adam on alpha_T (|T| x c, |T| = A * (L + b)), warm-started across greedy steps;
  outer  G(alpha) = mean_{x in pool} CE(K_{xT} alpha_T, t_x), and its gradient with respect
         to alpha' = [alpha_T; alpha_C] (candidates enter with weight 0 and alpha_C = 0, as in
         the authors' build_with_representer_proxy_batch);
  CG     `steps` iterations on H_alpha v = grad G with H_alpha the Hessian of F over alpha'
         (dimension (|T| + |C|) c; a matvec costs O((|T| + |C|)^2 c) through K_{T'T'});
  score  s_j = (p_j - y~_j) . (K_{jT'} v) for every candidate j.

Where the two formulations coincide. Writing Z' for the features of T' = T u C,
H_alpha = Z' H_w Z'^T and grad_alpha = Z' grad_w, so when Z' has full column rank m (all pool
points as candidates and P >= m, generic features) the exact solution v of the alpha system
gives Z'^T v = H_w^-1 grad_w G and the scores are identical. They differ (1) with few CG steps:
CG in alpha space runs in the Krylov space of Z'^T Z' H_w (a different, worse-conditioned
system) so truncated solves differ; (2) with Adam: the same minibatches give different
iterates in alpha and in w coordinates; (3) with a candidate subsample (`candidates=k`, the
authors' candidate_batch_size, default 200) only k random points are scored per step.

Costs: the all-pool variant needs the cached P x P kernel K_CC (P^2 floats) and O(P^2 c) per CG
step; the inner step is O(B |T| c) and the kernel between bank and pool O(|T| P m) per greedy
step. The Nystrom formulation needs O(P m c) per CG-free pass and O(m^2 c) per CG step.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import optax

from bilevel_jax.bilevel import ihvp
from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import select as nystrom_select
from bilevel_jax.bilevel import settings as settings_lib


# Same fields as the Nystrom selection; w: (m, c) = Z_T^T alpha_T at the end.
RepresenterSelection = nystrom_select.Selection


def pool_kernel(pool_z: jax.Array) -> jax.Array:
  """The cached kernel of the whole pool, K_CC = Z Z^T: (P, P). P^2 floats of memory."""
  return pool_z @ pool_z.T


def kernel_inner_objective(
  alpha_t: jax.Array, k_tt: jax.Array, y_pairs: jax.Array, pair_w: jax.Array, l2: jax.Array
) -> jax.Array:
  """F over the bank pairs. alpha_t: (T, c), k_tt: (T, T), y_pairs: (T, c), pair_w: (T,) with
  sum 1 over valid pairs. Returns ()."""
  logits = k_tt @ alpha_t
  xent = inner.softmax_xent(logits, y_pairs)
  return jnp.sum(pair_w * xent) + l2 * jnp.sum(alpha_t * (k_tt @ alpha_t))


def _extended_objective(alpha_all, k_tt, k_tc, k_cc, y_pairs, pair_w, l2):
  """F as a function of alpha' = [alpha_T; alpha_C]: (T + C, c). The kernel blocks are
  k_tt (T, T), k_tc (T, C), k_cc (C, C)."""
  t = k_tt.shape[0]
  a_t, a_c = alpha_all[:t], alpha_all[t:]
  logits = k_tt @ a_t + k_tc @ a_c
  xent = inner.softmax_xent(logits, y_pairs)
  ka_t = k_tt @ a_t + k_tc @ a_c
  ka_c = k_tc.T @ a_t + k_cc @ a_c
  return jnp.sum(pair_w * xent) + l2 * (jnp.sum(a_t * ka_t) + jnp.sum(a_c * ka_c))


def fit_alpha(
  key: jax.Array,
  alpha_t: jax.Array,
  opt_state: Any,
  k_tt: jax.Array,
  y_pairs: jax.Array,
  pair_w: jax.Array,
  valid: jax.Array,
  lr: jax.Array,
  l2: jax.Array,
  *,
  copies: int,
  steps: int,
  batch_size: int | None,
) -> tuple[jax.Array, Any]:
  """`steps` Adam steps on F over alpha_t (T, c) in one lax.scan; the minibatches are the pairs
  `inner.fit_inner_steps` draws from the same key. Returns (alpha_t, Adam state)."""
  adam = optax.scale_by_adam()

  def adam_step(carry, idx):
    a, st = carry
    if batch_size is None:
      loss, g = jax.value_and_grad(kernel_inner_objective)(a, k_tt, y_pairs, pair_w, l2)
    else:

      def minibatch(a):
        xent = inner.softmax_xent(k_tt[idx] @ a, y_pairs[idx])
        return jnp.mean(xent) + l2 * jnp.sum(a * (k_tt @ a))

      loss, g = jax.value_and_grad(minibatch)(a)
    upd, st = adam.update(g, st, a)
    return (a - lr * upd, st), loss

  if batch_size is None:
    xs = None
  else:
    slots, cps = inner.sample_pair_indices(key, valid, copies, steps=steps, batch_size=batch_size)
    xs = slots * copies + cps  # (steps, B)
  (alpha_t, opt_state), _ = lax.scan(adam_step, (alpha_t, opt_state), xs, length=steps)
  return alpha_t, opt_state


def outer_grad_alpha(
  alpha_t: jax.Array, k_tp: jax.Array, k_cp: jax.Array, targets: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """G and its gradient over alpha' = [alpha_T; alpha_C = 0].

  alpha_t: (T, c); k_tp: (T, P) bank-pool kernel; k_cp: (C, P) candidate-pool kernel;
  targets: (P, c). Returns G (), grad (T + C, c) and pool probabilities (P, c).
  """
  f_pool = k_tp.T @ alpha_t  # (P, c)
  probs = jax.nn.softmax(f_pool, axis=-1)
  resid = (probs - targets) / targets.shape[0]
  g_val = jnp.mean(inner.softmax_xent(f_pool, targets))
  return g_val, jnp.concatenate([k_tp @ resid, k_cp @ resid]), probs


def solve_alpha(
  alpha_t: jax.Array,
  g_all: jax.Array,
  k_tt: jax.Array,
  k_tc: jax.Array,
  k_cc: jax.Array,
  y_pairs: jax.Array,
  pair_w: jax.Array,
  l2: jax.Array,
  *,
  steps: int,
) -> ihvp.CGResult:
  """v ~= H_alpha^-1 grad G over alpha' (T + C, c) by `steps` CG iterations (`ihvp`)."""
  alpha_all = jnp.concatenate(
    [alpha_t, jnp.zeros((k_cc.shape[0], alpha_t.shape[1]), alpha_t.dtype)]
  )
  f_ext = lambda a: _extended_objective(a, k_tt, k_tc, k_cc, y_pairs, pair_w, l2)
  return ihvp.inverse_hvp(f_ext, alpha_all, g_all, steps=steps)


def candidate_scores(
  v: jax.Array, k_tc: jax.Array, k_cc: jax.Array, probs_c: jax.Array, pseudo_c: jax.Array
) -> jax.Array:
  """s_j = (p_j - y~_j) . (K_{jT'} v) for the C candidates. v: (T + C, c). Returns (C,)."""
  n_t = k_tc.shape[0]
  kv = k_tc.T @ v[:n_t] + k_cc @ v[n_t:]  # (C, c)
  return jnp.sum(kv * (probs_c - pseudo_c), axis=-1)


@functools.partial(jax.jit, static_argnames=("bank_fn", "n_bilevel", "n_uniform", "candidates"))
def _select(
  key,
  pool_z,
  pseudo_labels,
  labeled_idx,
  labeled_labels,
  labeled_bank,
  bank_params,
  k_pool,
  settings,
  *,
  bank_fn,
  n_bilevel,
  n_uniform,
  candidates,
):
  # settings: SelectionSettings, floats as pool-dtype scalars (traced), the rest static.
  lr, l2 = settings.lr, settings.l2
  p, m = pool_z.shape
  c = pseudo_labels.shape[1]
  n_lab, n_aug, _ = labeled_bank.shape
  dtype = pool_z.dtype
  # split(key, 4)[:3] == split(key, 3) (threefry partitionable): the same inner, bank and
  # uniform keys as the Nystrom selection, and a fourth stream for the candidates.
  inner_key, bank_key, uniform_key, cand_key = jax.random.split(key, 4)

  onehot = jax.nn.one_hot(labeled_labels, c, dtype=dtype)
  targets = pseudo_labels.at[labeled_idx].set(onehot)  # (P, c)
  available = jnp.ones((p,), bool).at[labeled_idx].set(False)
  cap = n_lab + n_bilevel
  n_t = cap * n_aug
  bank_z = jnp.zeros((cap, n_aug, m), dtype).at[:n_lab].set(labeled_bank.astype(dtype))
  bank_y = jnp.zeros((cap, c), dtype).at[:n_lab].set(onehot)
  valid = jnp.arange(cap) < n_lab

  def greedy_step(k, carry):
    alpha_t, opt_state, bank_z, bank_y, valid, available, picks, diag = carry
    z_t = bank_z.reshape(n_t, m)  # (T, m)
    y_pairs = jnp.repeat(bank_y, n_aug, axis=0)  # (T, c)
    pair_w = jnp.repeat(valid.astype(dtype), n_aug) / (n_aug * jnp.maximum(jnp.sum(valid), 1))
    k_tt = z_t @ z_t.T  # (T, T)
    k_tp = z_t @ pool_z.T  # (T, P)
    alpha_t, opt_state = fit_alpha(
      jax.random.fold_in(inner_key, k),
      alpha_t,
      opt_state,
      k_tt,
      y_pairs,
      pair_w,
      valid,
      lr,
      l2,
      copies=n_aug,
      steps=settings.inner_steps,
      batch_size=settings.batch_size,
    )
    if candidates is None:
      cand = jnp.arange(p)
      k_tc, k_cc, k_cp = k_tp, k_pool, k_pool  # C = pool
    else:
      u = jnp.where(available, jax.random.uniform(jax.random.fold_in(cand_key, k), (p,)), -1.0)
      _, cand = lax.top_k(u, candidates)
      z_c = pool_z[cand]
      k_tc, k_cc, k_cp = k_tp[:, cand], z_c @ z_c.T, z_c @ pool_z.T
    g_val, g_all, probs = outer_grad_alpha(alpha_t, k_tp, k_cp, targets)
    cg = solve_alpha(alpha_t, g_all, k_tt, k_tc, k_cc, y_pairs, pair_w, l2, steps=settings.cg_steps)
    scores_c = candidate_scores(cg.x, k_tc, k_cc, probs[cand], pseudo_labels[cand])
    masked = jnp.where(available[cand], scores_c, -jnp.inf)
    i = cand[jnp.argmax(masked)]
    copies = bank_fn(bank_params, jax.random.fold_in(bank_key, k), i).astype(dtype)
    slot = n_lab + k
    f_bank = kernel_inner_objective(alpha_t, k_tt, y_pairs, pair_w, l2)
    row = jnp.stack([jnp.max(masked), f_bank, g_val, cg.residual])
    return (
      alpha_t,
      opt_state,
      bank_z.at[slot].set(copies),
      bank_y.at[slot].set(pseudo_labels[i]),
      valid.at[slot].set(True),
      available.at[i].set(False),
      picks.at[k].set(i.astype(jnp.int32)),
      diag.at[k].set(row),
    )

  alpha0 = jnp.zeros((n_t, c), dtype)
  carry = (
    alpha0,
    optax.scale_by_adam().init(alpha0),
    bank_z,
    bank_y,
    valid,
    available,
    jnp.zeros((n_bilevel,), jnp.int32),
    jnp.zeros((n_bilevel, 4), dtype),
  )
  alpha_t, _, bank_z, _, _, available, picks, diag = lax.fori_loop(0, n_bilevel, greedy_step, carry)
  if n_uniform:
    picks = jnp.concatenate(
      [picks, nystrom_select.uniform_picks(uniform_key, available, n_uniform, dtype)]
    )
  is_bilevel = jnp.arange(n_bilevel + n_uniform) < n_bilevel
  w = bank_z.reshape(n_t, m).T @ alpha_t
  return RepresenterSelection(picks, is_bilevel, diag[:, 0], diag[:, 1], diag[:, 2], diag[:, 3], w)


def select_batch(
  key: jax.Array,
  pool_z: jax.Array,
  pseudo_labels: jax.Array,
  labeled_idx: jax.Array,
  labeled_labels: jax.Array,
  labeled_bank: jax.Array,
  bank_fn: nystrom_select.BankFn,
  bank_params: Any,
  *,
  b: int,
  k_pool: jax.Array | None = None,
  candidates: int | None = None,
  uniform_fraction: float = 0.1,
  lr: float = 1e-3,
  l2: float = 1e-4,
  inner_steps: int = 1000,
  batch_size: int | None = 64,
  cg_steps: int = 30,
  validate: bool = True,
) -> RepresenterSelection:
  """Representer-formulation counterpart of `bilevel.select.select_batch` (same arguments).

  Args:
    k_pool: (P, P) cached pool kernel from `pool_kernel`; required when candidates is None
      (every pool point is a candidate, the equal-settings comparison).
    candidates: None, or the number of random candidates scored per greedy step (the authors'
      candidate_batch_size); then no P x P kernel is needed.
    Others: exactly as in `bilevel.select.select_batch` (validate also checks that the
      greedy scores are finite).
  """
  # The mean convention is the only one of this formulation.
  settings = settings_lib.SelectionSettings(
    uniform_fraction, lr, l2, inner_steps, batch_size, cg_steps, loss_reduction="mean"
  )
  if validate:
    inputs = nystrom_select.SelectionInputs(
      pool_z, pseudo_labels, labeled_idx, labeled_labels, labeled_bank, bank_fn, bank_params
    )
    nystrom_select.validate_inputs(inputs, b=b, settings=settings)
  p = np.shape(pool_z)[0]
  if candidates is None:
    if k_pool is None or np.shape(k_pool) != (p, p):
      raise ValueError(
        f"k_pool must be the (P={p}, P) cached kernel pool_kernel(pool_z) when "
        f"candidates is None, got {None if k_pool is None else np.shape(k_pool)}."
      )
  else:
    n_avail = p - np.shape(labeled_idx)[0]
    if not isinstance(candidates, (int, np.integer)) or not 1 <= candidates <= n_avail:
      raise ValueError(
        f"candidates must be an int in [1, {n_avail}] (available pool points) "
        f"or None, got {candidates!r}."
      )
    k_pool = jnp.zeros((0, 0), jnp.asarray(pool_z).dtype)
  n_bilevel, n_uniform = nystrom_select.split_batch(b, uniform_fraction)
  pool_z = jnp.asarray(pool_z)
  dtype = pool_z.dtype
  sel = _select(
    key,
    pool_z,
    jnp.asarray(pseudo_labels, dtype),
    jnp.asarray(labeled_idx),
    jnp.asarray(labeled_labels),
    jnp.asarray(labeled_bank, dtype),
    bank_params,
    jnp.asarray(k_pool, dtype),
    settings_lib.traced_as(settings, dtype),
    bank_fn=bank_fn,
    n_bilevel=n_bilevel,
    n_uniform=n_uniform,
    candidates=None if candidates is None else int(candidates),
  )
  if validate:
    nystrom_select.check_scores(sel.scores)
  return sel
