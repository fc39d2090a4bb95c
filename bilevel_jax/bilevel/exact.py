"""Exact solves of the greedy bilevel selection (`select_batch(..., solver="exact")`).

Per greedy step:
  * the inner problem (`inner.py`, strongly convex) is solved by Newton-CG until
    ||grad F(w)|| <= inner_tol * ||grad F(0)||, warm-started from the previous greedy step's w,
    with a lax.while_loop capped at `inner_max_iter` Newton steps (starting from w0 instead took
    ~40% fewer CG iterations on the anchor problem but swapped two picks of a float32 reference
    case, so the warm start stays);
    each Newton direction comes from preconditioned CG with an inexact-Newton forcing term;
  * v = H^-1 grad G: when the reduced system has at most `DENSE_MAX_UNKNOWNS` unknowns (c * r),
    directly, by a Cholesky solve of the dense reduced Hessian and iterative refinement; otherwise (or if the factorization fails) by preconditioned CG until
    ||H v - grad G|| <= ihvp_rtol ||grad G|| (capped at `ihvp_max_iter` iterations),
    warm-started from the previous step's v. In float32 at l2 = 1e-4 (condition ~1e4-1e5) CG
    stagnated after 1000 iterations on 80-point test problems (reduced residuals ~3e-3); the
    direct solve gets ~1e-3 there in one solve, and ~1e-10 in float64.

Reduced coordinates. The bank has R = S * A rows and usually far fewer rows than features m. With
Q (m, r) an orthonormal basis of the rows' span (QR of Z^T, r = R; Q = I when R >= m), F depends
on w only through W_r = w^T Q (c, r) plus the penalty of the orthogonal part, so the minimiser has
no orthogonal part and the Hessian is block diagonal: H_r (on W_r) and 2 l2 I (orthogonal). Hence
  w* = (W_r*) Q^T,   v = (H_r^-1 (grad G Q)) Q^T + (grad G - (grad G Q) Q^T) / (2 l2),
exactly, and every Newton / CG iteration works on (R, r) instead of (R, m) rows. The recorded
inverse-HVP residual is the true one in the full space (one full HVP per greedy step).

Preconditioner (Kronecker). Per row i (weight s_i, reduced features x_i) the Hessian is
s_i x_i x_i^T (x) B_i with B_i = diag(p_i) - p_i p_i^T, so

  H_r = sum_i s_i (x_i x_i^T (x) B_i) + 2 l2 I  ~=  (Xs^T Xs) (x) B + 2 l2 I,   Xs = diag(sqrt s) X,

with B = sum_i s_i B_i / sum_i s_i. Xs^T Xs (r x r) is eigendecomposed once per greedy step and
B (c x c) once per Newton step; the inverse is then elementwise in the two eigenbases. The rows
are stored rotated into the eigenbasis of Xs^T Xs, where the feature side of the inverse is
diagonal. It is
exact when every row has the same softmax Hessian.

All tolerances are traced scalars (no recompilation); the caps are static.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from bilevel_jax.bilevel import inner

MatVec = Callable[[jax.Array], jax.Array]

DENSE_MAX_UNKNOWNS = 2048
"""Reduced inverse-HVP systems with at most this many unknowns c * r are solved directly: the
dense Hessian then takes <= 17 MB in float32 and its Cholesky <= 3 GFLOP (one per greedy step,
about what a few hundred CG iterations cost; the AL loop's cpu scale, c = 10 and 4 copies, is
below it up to ~50 labels)."""


class Reduced(NamedTuple):
  """The bank in reduced coordinates: basis (m, r) orthonormal columns or None (r = m);
  eig_u (r, r), eig_sigma (r,): eigenpairs of Xs^T Xs in the basis; x (R, r) rows in the
  rotated basis (basis @ eig_u), so Xs^T Xs = diag(eig_sigma) there; y (R, c) labels,
  weight (R,) row weights in F, s (R,) Hessian weights."""

  basis: jax.Array | None
  x: jax.Array
  y: jax.Array
  weight: jax.Array
  s: jax.Array
  eig_u: jax.Array
  eig_sigma: jax.Array


class PCGResult(NamedTuple):
  """x: solution of b's shape; residual: () relative residual ||A x - b|| / ||b||;
  iterations: () int32."""

  x: jax.Array
  residual: jax.Array
  iterations: jax.Array


class NewtonResult(NamedTuple):
  """wr: (c, r) reduced weights; grad_norm: () ||grad F||; iterations: () Newton steps (int32);
  cg_iterations: () CG iterations over all Newton steps (int32)."""

  wr: jax.Array
  grad_norm: jax.Array
  iterations: jax.Array
  cg_iterations: jax.Array


def _vdot(a, b):
  return jnp.sum(a * b)


def reduce_bank(bank: inner.Bank, reduction: str) -> Reduced:
  """The bank's rows in an orthonormal basis of their span, and the preconditioner's Gram
  eigenpairs. Static choice: a basis only when the bank has fewer rows than features."""
  z, y, weight = inner.bank_rows(bank, reduction)
  r_rows, m = z.shape
  if r_rows < m:
    basis, _ = jnp.linalg.qr(z.T)  # (m, R)
    x = z @ basis  # (R, R)
  else:
    basis, x = None, z
  s = weight * jnp.sum(y, axis=-1)
  xs = jnp.sqrt(s)[:, None] * x
  sigma, u = jnp.linalg.eigh(xs.T @ xs)
  # Rows rotated into the Gram eigenbasis: the preconditioner is then diagonal on the feature
  # side, which halves the FLOPs of a PCG iteration (one (c, r) x (r, r) product per side saved).
  return Reduced(basis, x @ u, y, weight, s, u, jnp.maximum(sigma, 0.0))


def to_reduced(wt: jax.Array, red: Reduced) -> jax.Array:
  """(c, m) -> (c, r) coordinates in the rotated basis."""
  return (wt if red.basis is None else wt @ red.basis) @ red.eig_u


def to_full(wr: jax.Array, red: Reduced) -> jax.Array:
  """(c, r) -> (c, m)."""
  wr = wr @ red.eig_u.T
  return wr if red.basis is None else wr @ red.basis.T


def value_grad(wr: jax.Array, red: Reduced, l2: jax.Array) -> tuple[jax.Array, jax.Array]:
  """F and its gradient in reduced coordinates (equal to the full ones for w = wr Q^T)."""
  loss, grad = inner.xent_grad_t(wr, red.x, red.y, red.weight)
  return loss + l2 * jnp.sum(wr * wr), grad + 2.0 * l2 * wr


def hvp(wr: jax.Array, red: Reduced, l2: jax.Array) -> MatVec:
  """u (c, r) -> H_r u at wr (c, r)."""
  return inner.rows_hvp_t(wr, red.x, red.y, red.weight, l2)


def kron_preconditioner(wr: jax.Array, red: Reduced, l2: jax.Array) -> MatVec:
  """u (c, r) -> P^-1 u for the Kronecker approximation of H_r at wr (module docstring)."""
  p = jax.nn.softmax(red.x @ wr.T, axis=-1)  # (R, c)
  total = jnp.maximum(jnp.sum(red.s), jnp.finfo(wr.dtype).tiny)
  b_mean = (jnp.diag(red.s @ p) - (p * red.s[:, None]).T @ p) / total  # (c, c)
  mu, q = jnp.linalg.eigh(b_mean)
  inv = 1.0 / (2.0 * l2 + jnp.maximum(mu, 0.0)[:, None] * red.eig_sigma[None, :])  # (c, r)

  def apply(u):
    return q @ (inv * (q.T @ u))

  return apply


def pcg(
  matvec: MatVec,
  b: jax.Array,
  precond: MatVec,
  rtol: jax.Array,
  max_iter: int,
  restarts: int = 2,
  x0: jax.Array | None = None,
) -> PCGResult:
  """Preconditioned CG for A x = b (A SPD) until ||A x - b|| <= rtol ||b|| or `max_iter`
  iterations in all, from x0 (zeros by default); reports the true relative residual.

  In float32 the recursive residual drifts away from the true one (true residuals of 2e-3 when
  the recursion reported 1e-4), so after each run the true residual is recomputed and CG
  restarted from x on it, at most `restarts` times (static).
  """
  tiny = jnp.finfo(b.dtype).tiny
  b_norm = jnp.sqrt(_vdot(b, b))
  stop = rtol * b_norm

  def run(x, it):
    r = b - matvec(x)
    return _pcg_run(matvec, precond, x, r, stop, it, max_iter)

  def rel(x):
    true_r = matvec(x) - b
    return jnp.sqrt(_vdot(true_r, true_r)) / jnp.maximum(b_norm, tiny)

  if x0 is None:
    x, it = _pcg_run(
      matvec, precond, jnp.zeros_like(b), b, stop, jnp.zeros((), jnp.int32), max_iter
    )
  else:
    x, it = run(x0, jnp.zeros((), jnp.int32))
  res = rel(x)
  for _ in range(restarts):
    x, it = lax.cond((res > rtol) & (it < max_iter), run, lambda x, it: (x, it), x, it)
    res = rel(x)
  return PCGResult(x, res, it)


def _pcg_run(matvec, precond, x0, r0, stop, it0, max_iter):
  """PCG iterations from x0 with residual r0 until ||r|| <= stop or it reaches max_iter."""
  tiny = jnp.finfo(r0.dtype).tiny
  z0 = precond(r0)

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

  init = (x0, r0, z0, z0, _vdot(r0, z0), it0)
  x, _, _, _, _, it = lax.while_loop(cond, body, init)
  return x, it


def newton_solve(
  wr0: jax.Array, red: Reduced, l2: jax.Array, *, tol: jax.Array, max_iter: int, cg_max_iter: int
) -> NewtonResult:
  """Minimises F in reduced coordinates from wr0 (c, r) by Newton-CG with backtracking.

  Stops when ||grad F|| <= tol * ||grad F(0)||, after `max_iter` Newton steps, or when the
  Newton decrement is below the float resolution of F (no further progress is representable).
  """
  vg = lambda wr: value_grad(wr, red, l2)
  g_zero = jnp.sqrt(jnp.sum(vg(jnp.zeros_like(wr0))[1] ** 2))
  thr = tol * g_zero
  f0, g0 = vg(wr0)
  eps = jnp.finfo(wr0.dtype).eps
  tiny = jnp.finfo(wr0.dtype).tiny

  def cond(carry):
    _, _, _, gnorm, it, _, ok = carry
    return (gnorm > thr) & (it < max_iter) & ok

  def body(carry):
    wr, f, g, gnorm, it, cg_it, _ = carry
    # Forcing term eta = min(0.1, ||g|| / ||g(0)||) (quadratic convergence near the
    # minimiser), but no tighter than the stopping test needs.
    ratio = gnorm / jnp.maximum(g_zero, tiny)
    eta = jnp.minimum(0.1, jnp.maximum(ratio, 0.1 * tol / jnp.maximum(ratio, tol)))
    sol = pcg(hvp(wr, red, l2), g, kron_preconditioner(wr, red, l2), eta, cg_max_iter, restarts=0)
    step = sol.x
    slope = _vdot(g, step)  # Newton decrement^2 (> 0: descent along -step)

    def accept(t, f_new, g_new):
      armijo = f_new <= f - 1e-4 * t * slope
      # Near the minimiser F stops resolving the decrease: accept a step that lowers the
      # gradient norm without raising F above its rounding level.
      flat = (f_new <= f + 1e2 * eps * jnp.abs(f)) & (_vdot(g_new, g_new) < gnorm * gnorm)
      return (armijo | flat) & jnp.isfinite(f_new)

    def ls_body(ls):
      t = ls[0] * 0.5
      f_new, g_new = vg(wr - t * step)
      return t, f_new, g_new, accept(t, f_new, g_new)

    f1, g1 = vg(wr - step)
    t, f_new, g_new, ok = lax.while_loop(
      lambda ls: (~ls[3]) & (ls[0] > 1e-8),
      ls_body,
      (jnp.ones((), wr.dtype), f1, g1, accept(1.0, f1, g1)),
    )
    ok = ok & (slope > 0)
    wr = jnp.where(ok, wr - t * step, wr)
    f = jnp.where(ok, f_new, f)
    g = jnp.where(ok, g_new, g)
    # Predicted decrease slope / 2 below F's rounding level: later steps cannot be resolved.
    ok = ok & (slope > 1e1 * eps * jnp.abs(f))
    return wr, f, g, jnp.sqrt(_vdot(g, g)), it + 1, cg_it + sol.iterations, ok

  init = (
    wr0,
    f0,
    g0,
    jnp.sqrt(_vdot(g0, g0)),
    jnp.zeros((), jnp.int32),
    jnp.zeros((), jnp.int32),
    jnp.ones((), bool),
  )
  wr, _, _, gnorm, it, cg_it, _ = lax.while_loop(cond, body, init)
  return NewtonResult(wr, gnorm, it, cg_it)


def dense_hessian(wr: jax.Array, red: Reduced, l2: jax.Array) -> jax.Array:
  """H_r (c r, c r) at wr (c, r), unknowns ordered as u.reshape(-1) for u (c, r):
  sum_i s_i B_i (x) x_i x_i^T + 2 l2 I with B_i = diag(p_i) - p_i p_i^T (module docstring)."""
  c, r = wr.shape
  p = jax.nn.softmax(red.x @ wr.T, axis=-1)  # (R, c)
  b = red.s[:, None, None] * (jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :])  # (R, c, c)
  h = jnp.einsum("iab,ij,ik->ajbk", b, red.x, red.x).reshape(c * r, c * r)
  return 0.5 * (h + h.T) + 2.0 * l2 * jnp.eye(c * r, dtype=wr.dtype)


def dense_solve(
  wr: jax.Array, red: Reduced, l2: jax.Array, b: jax.Array, rtol: jax.Array, max_refine: int = 8
) -> PCGResult:
  """H_r x = b (c, r) by Cholesky of `dense_hessian`, then iterative refinement against the
  matrix-free H_r (the operator CG and the recorded residual use) while the relative residual
  is above rtol and falls, at most `max_refine` (static) times; `iterations` counts the direct
  solves.

  Refinement matters in float32: the dense and the matrix-free Hessian round differently (the
  sum over rows cancels, up to ~1e-4 relative on the test problems), so the first solve meets
  only ~3e-4; each refinement step shrinks that by ~10x.
  """
  c, r = b.shape
  factor = jax.scipy.linalg.cho_factor(dense_hessian(wr, red, l2), lower=True)
  solve = lambda rhs: jax.scipy.linalg.cho_solve(factor, rhs.reshape(-1)).reshape(c, r)
  matvec = hvp(wr, red, l2)
  b_norm = jnp.maximum(jnp.sqrt(_vdot(b, b)), jnp.finfo(b.dtype).tiny)

  def rel(x):
    res = b - matvec(x)
    return res, jnp.sqrt(_vdot(res, res)) / b_norm

  def cond(carry):
    _, _, norm, prev, k = carry
    return (norm > rtol) & (norm < prev) & (k <= max_refine)

  def body(carry):
    x, res, norm, _, k = carry
    x_new = x + solve(res)
    res_new, norm_new = rel(x_new)
    better = norm_new < norm  # keep the best iterate
    return (
      jnp.where(better, x_new, x),
      jnp.where(better, res_new, res),
      jnp.where(better, norm_new, norm),
      norm,
      k + 1,
    )

  x0 = solve(b)
  res0, norm0 = rel(x0)
  init = (x0, res0, norm0, jnp.asarray(jnp.inf, norm0.dtype), jnp.ones((), jnp.int32))
  x, _, norm, _, k = lax.while_loop(cond, body, init)
  # A failed factorization (not positive definite in floating point) gives NaN: report inf.
  return PCGResult(x, jnp.where(jnp.isfinite(norm), norm, jnp.inf), k)


def inverse_hvp(
  wr: jax.Array,
  red: Reduced,
  l2: jax.Array,
  grad_g: jax.Array,
  v_prev: jax.Array,
  *,
  rtol: jax.Array,
  max_iter: int,
) -> PCGResult:
  """v = H^-1 grad G (c, m) at w = wr Q^T (module docstring): a direct solve of small reduced
  systems, else (or where the factorization fails) PCG in reduced coordinates from the previous greedy
  step's v_prev (c, m); `iterations` counts direct solves plus CG iterations. `residual` is that of the reduced system, relative to
  ||grad G Q|| (the orthogonal part is solved exactly)."""
  g_r = to_reduced(grad_g, red)

  def by_cg(x0, it0):
    sol = pcg(hvp(wr, red, l2), g_r, kron_preconditioner(wr, red, l2), rtol, max_iter, x0=x0)
    return sol._replace(iterations=sol.iterations + it0)

  if g_r.size <= DENSE_MAX_UNKNOWNS:
    direct = dense_solve(wr, red, l2, g_r, rtol)
    x0 = jnp.where(jnp.isfinite(direct.residual), direct.x, to_reduced(v_prev, red))
    # Only a failed factorization goes to CG: where the direct solve misses rtol in float32 it
    # is at the precision's floor (~eps * cond), which CG does not get below either.
    sol = lax.cond(
      jnp.isfinite(direct.residual), lambda x0, it0: direct, by_cg, x0, direct.iterations
    )
  else:
    sol = by_cg(to_reduced(v_prev, red), jnp.zeros((), jnp.int32))
  v = to_full(sol.x, red)
  if red.basis is not None:
    v = v + (grad_g - to_full(g_r, red)) / (2.0 * l2)
  return PCGResult(v, sol.residual, sol.iterations)
