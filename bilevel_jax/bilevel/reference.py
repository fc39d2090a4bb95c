"""Slow, obvious NumPy/SciPy version of Algorithm 1 for tests and benchmarks.

Same objectives as `inner.py` / `outer.py` (mean cross-entropy + l2 * ||w||^2 inner, mean
cross-entropy outer), written with Python loops over points, per-point gradients and explicit
Hessians. The inner problem is solved to high accuracy by Newton's method, so it is the exact
minimiser that the stochastic Adam solver of `inner.py` approximates. Weights are flattened
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


def inner_objective(w, zs, ys, l2, extra=None):
  """F(w) = mean_i CE(z_i, y_i) + l2 ||w||^2 (+ eps * CE(z_x, y_x) if extra=(eps, z_x, y_x))."""
  f = np.mean([point_loss(w, z, y) for z, y in zip(zs, ys)]) + l2 * np.sum(w * w)
  if extra is not None:
    eps, z_x, y_x = extra
    f += eps * point_loss(w, z_x, y_x)
  return float(f)


def inner_grad_hessian(w, zs, ys, l2, extra=None):
  """Gradient (mc,) and Hessian (mc, mc) of `inner_objective`, by loops over points."""
  n = len(zs)
  g = 2 * l2 * w.ravel()
  h = 2 * l2 * np.eye(w.size)
  for z, y in zip(zs, ys):
    g = g + point_grad(w, z, y) / n
    h = h + point_hessian(w, z) / n
  if extra is not None:
    eps, z_x, y_x = extra
    g = g + eps * point_grad(w, z_x, y_x)
    h = h + eps * point_hessian(w, z_x)
  return g, h


def newton_solve(zs, ys, l2, w0, extra=None, tol=1e-12, max_iter=100) -> np.ndarray:
  """Minimiser of the (strongly convex) inner objective by damped Newton steps."""
  w = np.array(w0, dtype=np.float64)
  for _ in range(max_iter):
    g, h = inner_grad_hessian(w, zs, ys, l2, extra)
    if np.linalg.norm(g) < tol:
      break
    step = np.linalg.solve(h, g).reshape(w.shape)
    f0, t = inner_objective(w, zs, ys, l2, extra), 1.0
    while inner_objective(w - t * step, zs, ys, l2, extra) > f0 - 0.25 * t * np.dot(g, step.ravel()):
      t *= 0.5
      if t < 1e-10:
        break
    w = w - t * step
  return w


def outer_objective(w, pool_z, targets) -> float:
  """G(w) = mean over the pool of CE(z_x, t_x)."""
  return float(np.mean([point_loss(w, z, t) for z, t in zip(pool_z, targets)]))


def outer_grad(w, pool_z, targets) -> np.ndarray:
  return np.mean([point_grad(w, z, t) for z, t in zip(pool_z, targets)], axis=0)


class ReferenceResult(NamedTuple):
  indices: np.ndarray    # (b,) greedy picks in order
  scores: np.ndarray     # (b,) score of each pick
  all_scores: list       # per step, (P,) scores (nan for unavailable points)
  ws: list               # per step, the inner solution (m, c)


def select(pool_z, pseudo_labels, labeled_idx, labeled_labels, labeled_bank, pool_bank, *,
           b, l2=1e-4, ihvp="solve", cg_steps=30, w0=None) -> ReferenceResult:
  """Algorithm 1 with exact inner solves (all greedy picks; no uniform share).

  Args:
    pool_z: (P, m) clean features; pseudo_labels: (P, c).
    labeled_idx, labeled_labels: (L,) pool indices and true classes.
    labeled_bank: (L, A, m) augmented copies of the labeled points.
    pool_bank: (P, A, m) augmented copies a picked point brings into the inner problem.
    b: number of greedy picks; l2: inner penalty lambda.
    ihvp: "solve" (dense solve of the explicit Hessian) or "cg" (scipy CG, `cg_steps`).
    w0: (m, c) start of the first Newton solve (zeros by default).
  """
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
  picks, pick_scores, all_scores, ws = [], [], [], []
  for _ in range(b):
    w = newton_solve(zs, ys, l2, w)
    g = outer_grad(w, pool_z, targets)
    _, h = inner_grad_hessian(w, zs, ys, l2)
    if ihvp == "solve":
      v = np.linalg.solve(h, g)
    elif ihvp == "cg":
      v, _ = scipy.sparse.linalg.cg(h, g, rtol=0.0, atol=0.0, maxiter=cg_steps)
    else:
      raise ValueError(f"ihvp must be 'solve' or 'cg', got {ihvp!r}.")
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
  return ReferenceResult(np.array(picks), np.array(pick_scores), all_scores, ws)
