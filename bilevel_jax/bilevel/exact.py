"""Exact solves of the greedy bilevel selection (`select_batch(..., solver="exact")`).

Per greedy step:
  * the inner problem (`inner.py`, strongly convex) is solved by Newton-CG until
    ||grad F(w)|| <= inner_tol * ||grad F(0)||, warm-started from the previous greedy step (the
    problem changes by one point), with a lax.while_loop capped at `inner_max_iter` Newton steps;
    each Newton direction comes from preconditioned CG with an inexact-Newton forcing term;
  * v = H^-1 grad G comes from preconditioned CG until ||H v - grad G|| <= ihvp_rtol ||grad G||
    (capped at `ihvp_max_iter` iterations).

Preconditioner (Kronecker). Per bank row i (weight s_i, features z_i) the Hessian is
s_i z_i z_i^T (x) B_i with B_i = diag(p_i) - p_i p_i^T, so

  H = sum_i s_i (z_i z_i^T (x) B_i) + 2 l2 I  ~=  (Zs^T Zs) (x) B + 2 l2 I,   Zs = diag(sqrt s) Z,

with B = sum_i s_i B_i / sum_i s_i. Zs^T Zs (m x m) is eigendecomposed once per greedy step,
through the (R x R) Gram Zs Zs^T when the bank has fewer rows R than features m; B (c x c) once
per Newton step. Applying the inverse costs two (c, m) x (m, min(R, m)) matmuls, like one HVP.
The approximation is exact when every row has the same softmax Hessian.

All tolerances are traced scalars (no recompilation); the caps are static.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from bilevel_jax.bilevel import inner

MatVec = Callable[[jax.Array], jax.Array]


class GramEigen(NamedTuple):
  """Eigenpairs of Zs^T Zs: v (m, r) orthonormal columns (zero where dropped), sigma (r,)."""
  v: jax.Array
  sigma: jax.Array


class PCGResult(NamedTuple):
  """x: solution of b's shape; residual: () true ||A x - b|| / ||b||; iterations: () int32."""
  x: jax.Array
  residual: jax.Array
  iterations: jax.Array


class NewtonResult(NamedTuple):
  """wt: (c, m) weights; grad_norm: () ||grad F(wt)||; iterations: () Newton steps (int32);
  cg_iterations: () CG iterations over all Newton steps (int32)."""
  wt: jax.Array
  grad_norm: jax.Array
  iterations: jax.Array
  cg_iterations: jax.Array


def _vdot(a, b):
  return jnp.sum(a * b)


def _row_scale(bank: inner.Bank, reduction: str) -> tuple[jax.Array, jax.Array]:
  """Bank rows z (R, m) and their Hessian weights s_i = weight_i * sum(y_i) (R,)."""
  z, y, weight = inner.bank_rows(bank, reduction)
  return z, weight * jnp.sum(y, axis=-1)


def gram_eigen(bank: inner.Bank, reduction: str) -> GramEigen:
  """Eigenpairs of Zs^T Zs (module docstring), from the smaller of the two Gram matrices.

  Directions with eigenvalue <= 1e3 * eps * max are dropped (v column and sigma set to 0): their
  v columns would be inaccurate, and the preconditioner there is the exact 1 / (2 l2).
  """
  z, s = _row_scale(bank, reduction)
  zs = jnp.sqrt(s)[:, None] * z                                       # (R, m)
  r, m = zs.shape
  thr = 1e3 * jnp.finfo(zs.dtype).eps
  if r <= m:
    sigma, u = jnp.linalg.eigh(zs @ zs.T)                              # (R,), (R, R)
    keep = sigma > thr * jnp.max(sigma)
    inv_sqrt = jnp.where(keep, lax.rsqrt(jnp.where(keep, sigma, 1.0)), 0.0)
    v = zs.T @ (u * inv_sqrt)                                          # (m, R)
  else:
    sigma, v = jnp.linalg.eigh(zs.T @ zs)                              # (m,), (m, m)
    keep = sigma > thr * jnp.max(sigma)
    v = v * keep
  return GramEigen(v, jnp.where(keep, sigma, 0.0))


def kron_preconditioner(wt: jax.Array, bank: inner.Bank, l2: jax.Array, reduction: str,
                        gram: GramEigen) -> MatVec:
  """u (c, m) -> P^-1 u for the Kronecker approximation of the Hessian of F at wt (c, m)."""
  z, s = _row_scale(bank, reduction)
  p = jax.nn.softmax(z @ wt.T, axis=-1)                               # (R, c)
  total = jnp.maximum(jnp.sum(s), jnp.finfo(wt.dtype).tiny)
  b_mean = (jnp.diag(s @ p) - (p * s[:, None]).T @ p) / total          # (c, c)
  mu, q = jnp.linalg.eigh(b_mean)
  lam = 2.0 * l2
  # 1 / (lam + mu_k sigma_j) - 1 / lam on the kept directions; P^-1 = I / lam + Q D V^T there.
  d = 1.0 / (lam + jnp.maximum(mu, 0.0)[:, None] * gram.sigma[None, :]) - 1.0 / lam  # (c, r)

  def apply(u):
    t = q.T @ (u @ gram.v)                                            # (c, r)
    return u / lam + (q @ (d * t)) @ gram.v.T
  return apply


def pcg(matvec: MatVec, b: jax.Array, precond: MatVec, rtol: jax.Array,
        max_iter: int) -> PCGResult:
  """Preconditioned CG for A x = b (A SPD) from x = 0 until ||r|| <= rtol ||b|| (recursive
  residual) or `max_iter` iterations; reports the true relative residual (one extra matvec)."""
  tiny = jnp.finfo(b.dtype).tiny
  b_norm = jnp.sqrt(_vdot(b, b))
  stop = rtol * b_norm
  z0 = precond(b)

  def cond(carry):
    _, r, _, _, _, it = carry
    return (jnp.sqrt(_vdot(r, r)) > stop) & (it < max_iter)

  def body(carry):
    x, r, z, p, rz, it = carry
    ap = matvec(p)
    pap = _vdot(p, ap)
    alpha = jnp.where(pap > tiny, rz / jnp.where(pap > tiny, pap, 1.0), 0.0)
    x = x + alpha * p
    r = r - alpha * ap
    z = precond(r)
    rz_new = _vdot(r, z)
    beta = jnp.where(rz > tiny, rz_new / jnp.where(rz > tiny, rz, 1.0), 0.0)
    return x, r, z, z + beta * p, rz_new, it + 1

  init = (jnp.zeros_like(b), b, z0, z0, _vdot(b, z0), jnp.zeros((), jnp.int32))
  x, _, _, _, _, it = lax.while_loop(cond, body, init)
  true_r = matvec(x) - b
  return PCGResult(x, jnp.sqrt(_vdot(true_r, true_r)) / jnp.maximum(b_norm, tiny), it)


def newton_solve(wt0: jax.Array, bank: inner.Bank, l2: jax.Array, reduction: str,
                 gram: GramEigen, *, tol: jax.Array, max_iter: int,
                 cg_max_iter: int) -> NewtonResult:
  """Minimises F (inner.py) from wt0 (c, m) by Newton-CG with a backtracking line search.

  Stops when ||grad F|| <= tol * ||grad F(0)||, after `max_iter` Newton steps, or when no step
  along the Newton direction decreases F or ||grad F|| any more (the float resolution of F).
  """
  value_grad = lambda wt: inner.bank_grad_t(wt, bank, l2, reduction)
  g_zero = jnp.sqrt(_vdot(*(value_grad(jnp.zeros_like(wt0))[1],) * 2))
  thr = tol * g_zero
  f0, g0 = value_grad(wt0)
  eps = jnp.finfo(wt0.dtype).eps

  def cond(carry):
    _, _, _, gnorm, it, _, ok = carry
    return (gnorm > thr) & (it < max_iter) & ok

  def body(carry):
    wt, f, g, gnorm, it, cg_it, _ = carry
    # Forcing term eta = min(0.1, sqrt(||g|| / ||g(0)||)): superlinear near the minimiser.
    eta = jnp.minimum(0.1, jnp.sqrt(gnorm / jnp.maximum(g_zero, jnp.finfo(wt.dtype).tiny)))
    sol = pcg(inner.bank_hvp_t(wt, bank, l2, reduction), g,
              kron_preconditioner(wt, bank, l2, reduction, gram), eta, cg_max_iter)
    step = sol.x
    slope = _vdot(g, step)                        # > 0 for a descent direction -step

    def ls_cond(ls):
      t, f_new, g_new, accept = ls
      return (~accept) & (t > 1e-8)

    def ls_body(ls):
      t = ls[0] * 0.5
      f_new, g_new = value_grad(wt - t * step)
      return t, f_new, g_new, _accept(t, f_new, g_new)

    def _accept(t, f_new, g_new):
      armijo = f_new <= f - 1e-4 * t * slope
      # Near the minimiser F stops resolving the decrease: accept a step that still lowers the
      # gradient norm without raising F above its rounding level.
      flat = (f_new <= f + 1e2 * eps * jnp.abs(f)) & (_vdot(g_new, g_new) < gnorm * gnorm)
      return (armijo | flat) & jnp.isfinite(f_new)

    f1, g1 = value_grad(wt - step)
    t, f_new, g_new, accept = lax.while_loop(
        ls_cond, ls_body, (jnp.ones((), wt.dtype), f1, g1, _accept(1.0, f1, g1)))
    ok = accept & (slope > 0)
    wt = jnp.where(ok, wt - t * step, wt)
    f = jnp.where(ok, f_new, f)
    g = jnp.where(ok, g_new, g)
    return wt, f, g, jnp.sqrt(_vdot(g, g)), it + 1, cg_it + sol.iterations, ok

  init = (wt0, f0, g0, jnp.sqrt(_vdot(g0, g0)), jnp.zeros((), jnp.int32),
          jnp.zeros((), jnp.int32), jnp.ones((), bool))
  wt, _, _, gnorm, it, cg_it, _ = lax.while_loop(cond, body, init)
  return NewtonResult(wt, gnorm, it, cg_it)
