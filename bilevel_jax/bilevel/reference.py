"""Slow, obvious NumPy/SciPy version of Algorithm 1 for tests and benchmarks.

Same objectives as `inner.py` / `outer.py` in both conventions (`loss_reduction`): "sum" (the
paper's Eq. 3: F = sum over bank points of the mean CE over their A copies + l2 * ||w||^2,
G = sum of CE over the pool) or "mean" (F: mean CE over the (point, copy) rows + l2 * ||w||^2,
G: mean over the pool), written with Python loops over points, per-point gradients and explicit
Hessians. The inner problem is solved by damped Newton steps with dense solves until the gradient
norm is at the float64 rounding level (recorded in the result), and v = H^-1 grad G by a dense
solve, so the picks are those of the exact greedy rule. Weights are flattened
row-major: w[i, k] -> i * c + k, so grad_w l(z, y) = outer(z, p - y).ravel() and the Hessian of
l is kron(z z^T, diag(p) - p p^T).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse.linalg


def softmax(a: np.ndarray) -> np.ndarray:
  e = np.exp(a - np.max(a))
  return e / e.sum()


def point_loss(w: np.ndarray, z: np.ndarray, y: np.ndarray) -> float:
  """Cross-entropy of one point. w: (m, c), z: (m,), y: (c,)."""
  a = w.T @ z
  log_p = a - np.max(a) - np.log(np.sum(np.exp(a - np.max(a))))
  return float(-np.dot(y, log_p))


def point_grad(w: np.ndarray, z: np.ndarray, y: np.ndarray) -> np.ndarray:
  """grad_w of the point loss, flattened (m * c,)."""
  return np.outer(z, softmax(w.T @ z) - y).ravel()


def point_hessian(w: np.ndarray, z: np.ndarray) -> np.ndarray:
  """Hessian of the point loss, (m * c, m * c); it does not depend on the label."""
  p = softmax(w.T @ z)
  return np.kron(np.outer(z, z), np.diag(p) - np.outer(p, p))


def inner_objective(w, zs, ys, l2, extra=None, row_weight=None):
  """F(w) = sum_i row_weight CE(z_i, y_i) + l2 ||w||^2 (+ eps * CE(z_x, y_x) if
  extra=(eps, z_x, y_x)); row_weight defaults to 1 / #rows (the mean)."""
  rw = 1.0 / len(zs) if row_weight is None else row_weight
  f = rw * np.sum([point_loss(w, z, y) for z, y in zip(zs, ys)]) + l2 * np.sum(w * w)
  if extra is not None:
    eps, z_x, y_x = extra
    f += eps * point_loss(w, z_x, y_x)
  return float(f)


def inner_grad_hessian(w, zs, ys, l2, extra=None, row_weight=None):
  """Gradient (mc,) and Hessian (mc, mc) of `inner_objective`, by loops over points."""
  rw = 1.0 / len(zs) if row_weight is None else row_weight
  g = 2 * l2 * w.ravel()
  h = 2 * l2 * np.eye(w.size)
  for z, y in zip(zs, ys):
    g = g + point_grad(w, z, y) * rw
    h = h + point_hessian(w, z) * rw
  if extra is not None:
    eps, z_x, y_x = extra
    g = g + eps * point_grad(w, z_x, y_x)
    h = h + eps * point_hessian(w, z_x)
  return g, h


def newton_solve(
  zs, ys, l2, w0, extra=None, tol=1e-12, max_iter=100, row_weight=None
) -> np.ndarray:
  """Minimiser of the (strongly convex) inner objective by damped Newton steps with dense
  solves; stops at ||grad|| < tol * max(1, ||grad F(0)||) or when a full Newton step no longer
  lowers the gradient norm (float64 rounding level)."""
  w = np.array(w0, dtype=np.float64)
  g_zero = np.linalg.norm(inner_grad_hessian(np.zeros_like(w), zs, ys, l2, extra, row_weight)[0])
  for _ in range(max_iter):
    g, h = inner_grad_hessian(w, zs, ys, l2, extra, row_weight)
    if np.linalg.norm(g) < tol * max(1.0, g_zero):
      break
    step = np.linalg.solve(h, g).reshape(w.shape)
    f0, t = inner_objective(w, zs, ys, l2, extra, row_weight), 1.0
    while inner_objective(w - t * step, zs, ys, l2, extra, row_weight) > f0 - 0.25 * t * np.dot(
      g, step.ravel()
    ):
      t *= 0.5
      if t < 1e-10:
        break
    if t < 1e-10:  # F no longer resolves the decrease: take the full step if it lowers ||g||
      g_new = inner_grad_hessian(w - step, zs, ys, l2, extra, row_weight)[0]
      if np.linalg.norm(g_new) >= np.linalg.norm(g):
        break
      t = 1.0
    w = w - t * step
  return w


def outer_objective(w, pool_z, targets, loss_reduction="mean") -> float:
  """G(w) = mean ("mean") or sum ("sum") over the pool of CE(z_x, t_x)."""
  losses = [point_loss(w, z, t) for z, t in zip(pool_z, targets)]
  return float(np.mean(losses) if loss_reduction == "mean" else np.sum(losses))


def outer_grad(w, pool_z, targets, loss_reduction="mean") -> np.ndarray:
  grads = [point_grad(w, z, t) for z, t in zip(pool_z, targets)]
  return np.mean(grads, axis=0) if loss_reduction == "mean" else np.sum(grads, axis=0)


class ReferenceResult(NamedTuple):
  indices: np.ndarray  # (b,) greedy picks in order
  scores: np.ndarray  # (b,) score of each pick
  all_scores: list  # per step, (P,) scores (nan for unavailable points)
  ws: list  # per step, the inner solution (m, c)
  grad_norms: np.ndarray  # (b,) ||grad F|| at each inner solution
  ihvp_residuals: np.ndarray  # (b,) ||H v - grad G|| / ||grad G||


def select(
  pool_z,
  pseudo_labels,
  labeled_idx,
  labeled_labels,
  labeled_bank,
  pool_bank,
  *,
  b,
  l2=1e-4,
  ihvp="solve",
  cg_steps=30,
  w0=None,
  loss_reduction="sum",
) -> ReferenceResult:
  """Algorithm 1 with exact inner solves (all greedy picks; no uniform share).

  Args:
    pool_z: (P, m) clean features; pseudo_labels: (P, c).
    labeled_idx, labeled_labels: (L,) pool indices and true classes.
    labeled_bank: (L, A, m) augmented copies of the labeled points.
    pool_bank: (P, A, m) augmented copies a picked point brings into the inner problem.
    b: number of greedy picks; l2: inner penalty lambda.
    ihvp: "solve" (dense solve of the explicit Hessian) or "cg" (scipy CG, `cg_steps`).
    w0: (m, c) start of the first Newton solve (zeros by default).
    loss_reduction: "mean" or "sum" (module docstring).
  """
  if loss_reduction not in ("mean", "sum"):
    raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}.")
  n_aug = np.shape(labeled_bank)[1]
  pool_z = np.asarray(pool_z, np.float64)
  pseudo = np.asarray(pseudo_labels, np.float64)
  p, m = pool_z.shape
  c = pseudo.shape[1]
  labeled_idx = [int(i) for i in labeled_idx]
  zs, ys = [], []
  targets = pseudo.copy()
  for i, label, copies in zip(labeled_idx, labeled_labels, np.asarray(labeled_bank, np.float64)):
    onehot = np.eye(c)[int(label)]
    targets[i] = onehot
    for z in copies:
      zs.append(z)
      ys.append(onehot)
  w = np.zeros((m, c)) if w0 is None else np.array(w0, np.float64)
  picks, pick_scores, all_scores, ws, grad_norms, residuals = [], [], [], [], [], []
  for _ in range(b):
    # "sum": each (point, copy) row weighs 1 / A; "mean": 1 / #rows.
    row_weight = 1.0 / n_aug if loss_reduction == "sum" else None
    w = newton_solve(zs, ys, l2, w, row_weight=row_weight)
    g = outer_grad(w, pool_z, targets, loss_reduction)
    grad_f, h = inner_grad_hessian(w, zs, ys, l2, row_weight=row_weight)
    grad_norms.append(np.linalg.norm(grad_f))
    if ihvp == "solve":
      v = np.linalg.solve(h, g)
    elif ihvp == "cg":
      v, _ = scipy.sparse.linalg.cg(h, g, rtol=0.0, atol=0.0, maxiter=cg_steps)
    else:
      raise ValueError(f"ihvp must be 'solve' or 'cg', got {ihvp!r}.")
    residuals.append(np.linalg.norm(h @ v - g) / max(np.linalg.norm(g), 1e-300))
    scores = np.full(p, np.nan)
    for x in range(p):
      if x not in labeled_idx and x not in picks:
        scores[x] = point_grad(w, pool_z[x], pseudo[x]) @ v
    best = int(np.nanargmax(scores))
    picks.append(best)
    pick_scores.append(scores[best])
    all_scores.append(scores)
    ws.append(w.copy())
    for z in np.asarray(pool_bank, np.float64)[best]:
      zs.append(z)
      ys.append(pseudo[best])
  return ReferenceResult(
    np.array(picks),
    np.array(pick_scores),
    all_scores,
    ws,
    np.array(grad_norms),
    np.array(residuals),
  )
