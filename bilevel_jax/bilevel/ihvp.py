"""Inverse Hessian-vector products by conjugate gradients; the Hessian is never materialised."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class CGResult(NamedTuple):
  """x: approximate solution (same pytree shape as the right-hand side).

  residual: () relative true residual ||A x - b|| / ||b|| (one extra matvec to compute).
  """

  x: jax.Array
  residual: jax.Array


def hvp(loss_fn: Callable[[jax.Array], jax.Array], w: jax.Array, u: jax.Array) -> jax.Array:
  """Hessian of `loss_fn` at w times u, forward-over-reverse (jvp of grad). w, u: same shape."""
  return jax.jvp(jax.grad(loss_fn), (w,), (u,))[1]


def _vdot(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.sum(a * b)


def cg_solve(matvec: Callable[[jax.Array], jax.Array], b: jax.Array, *, steps: int) -> CGResult:
  """Exactly `steps` conjugate-gradient iterations for A x = b from x = 0.

  A (via `matvec`) must be symmetric positive definite. The loop length is fixed (lax.fori_loop)
  so the cost is predictable inside the greedy loop; once the residual hits zero the step sizes
  are guarded so later iterations leave x unchanged instead of dividing by zero.

  Args:
    matvec: x -> A x, an array of the shape of b (checked at trace time: a broadcasting
      mismatch would otherwise run silently).
    b: right-hand side, any shape (e.g. (c, m) weights).
    steps: iterations (static).

  Returns:
    CGResult(x of b's shape, relative true residual ()).
  """
  x0 = jnp.zeros_like(b)
  r0 = b
  tiny = jnp.finfo(b.dtype).tiny

  def body(_, carry):
    x, r, p, rr = carry
    ap = matvec(p)
    if ap.shape != p.shape:  # trace time; broadcasting would hide the mismatch
      raise ValueError(
        f"cg_solve: matvec maps shape {p.shape} to {ap.shape}; expected the shape of b."
      )
    pap = _vdot(p, ap)
    alpha = jnp.where(pap > tiny, rr / jnp.where(pap > tiny, pap, 1.0), 0.0)
    x = x + alpha * p
    r = r - alpha * ap
    rr_new = _vdot(r, r)
    beta = jnp.where(rr > tiny, rr_new / jnp.where(rr > tiny, rr, 1.0), 0.0)
    return x, r, r + beta * p, rr_new

  x, _, _, _ = lax.fori_loop(0, steps, body, (x0, r0, r0, _vdot(r0, r0)))
  b_norm = jnp.sqrt(_vdot(b, b))
  true_r = matvec(x) - b
  return CGResult(x, jnp.sqrt(_vdot(true_r, true_r)) / jnp.maximum(b_norm, tiny))


def inverse_hvp(
  loss_fn: Callable[[jax.Array], jax.Array], w: jax.Array, g: jax.Array, *, steps: int = 30
) -> CGResult:
  """v ~= H^-1 g with H the Hessian of `loss_fn` at w, by `steps` CG iterations.

  Args:
    loss_fn: scalar function of w (strongly convex here: the inner objective includes l2).
    w: (m, c) point of the Hessian.
    g: (m, c) right-hand side (the outer gradient).
    steps: CG iterations (the paper uses 30).

  Returns:
    CGResult with v (m, c) and the relative residual ||H v - g|| / ||g||.
  """
  # Forward-over-reverse: linearize (= jvp with the primal pass done once) of grad, so each CG
  # step runs only the tangent pass; same values as `hvp` above.
  _, hvp_lin = jax.linearize(jax.grad(loss_fn), w)
  return cg_solve(hvp_lin, g, steps=steps)
