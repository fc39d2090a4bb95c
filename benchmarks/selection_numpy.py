"""Straightforward NumPy/SciPy implementation of the bilevel greedy rule, timed per stage.

The same rule and settings as `bilevel_jax.bilevel.select.select_batch` written the way one
would without a compiler, like the authors' PyTorch code: a Python loop over Adam steps with a
NumPy minibatch gradient, SciPy CG (`scipy.sparse.linalg.cg`, fixed iteration count) with a
matrix-free NumPy Hessian-vector product, NumPy matrix products for the outer gradient and the
scores. Minibatch pairs, augmented copies and the uniform share are drawn with the same JAX keys
as the jitted version, so in float32 the two should pick the same points; only arithmetic order
differs. `bilevel_jax/bilevel/reference.py` is not used here because it solves the inner problem
exactly by Newton with an explicit (mc x mc) Hessian: a different (and at m = 2000, c = 35,
infeasible) computation, not the same rule at equal settings.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.linalg

from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import select as nystrom_select


class NumpyResult(NamedTuple):
  indices: np.ndarray  # (b,) greedy picks then uniform picks
  scores: np.ndarray  # (n_bilevel,)
  stage_seconds: dict  # inner / outer_grad / cg / scoring / bank -> seconds summed


def _softmax(a: np.ndarray) -> np.ndarray:
  a = a - a.max(axis=-1, keepdims=True)
  e = np.exp(a)
  return e / e.sum(axis=-1, keepdims=True)


def _pair_indices(key, valid, copies, steps, batch_size):
  slots, cps = inner.sample_pair_indices(key, valid, copies, steps=steps, batch_size=batch_size)
  return slots * copies + cps


_pair_indices_jit = jax.jit(_pair_indices, static_argnums=(2, 3, 4))


def select_batch(
  key: jax.Array,
  pool_z: np.ndarray,
  pseudo_labels: np.ndarray,
  labeled_idx: np.ndarray,
  labeled_labels: np.ndarray,
  labeled_bank: np.ndarray,
  bank_fn: Any,
  bank_params: Any,
  *,
  b: int,
  uniform_fraction: float = 0.1,
  lr: float = 1e-3,
  l2: float = 1e-4,
  inner_steps: int = 1000,
  batch_size: int = 64,
  cg_steps: int = 30,
) -> NumpyResult:
  """NumPy/SciPy bilevel selection; arguments as in `bilevel.select.select_batch`."""
  pool_z = np.asarray(pool_z, np.float32)
  pseudo = np.asarray(pseudo_labels, np.float32)
  p, m = pool_z.shape
  c = pseudo.shape[1]
  n_lab, n_aug, _ = np.shape(labeled_bank)
  n_bilevel, n_uniform = nystrom_select.split_batch(b, uniform_fraction)
  inner_key, bank_key, uniform_key = jax.random.split(key, 3)
  t = {"inner": 0.0, "outer_grad": 0.0, "cg": 0.0, "scoring": 0.0, "bank": 0.0}
  dtype = np.float32

  onehot = np.eye(c, dtype=dtype)[np.asarray(labeled_labels)]
  targets = pseudo.copy()
  targets[np.asarray(labeled_idx)] = onehot
  available = np.ones(p, bool)
  available[np.asarray(labeled_idx)] = False
  cap = n_lab + n_bilevel
  bank_z = np.zeros((cap, n_aug, m), dtype)
  bank_z[:n_lab] = labeled_bank
  bank_y = np.zeros((cap, c), dtype)
  bank_y[:n_lab] = onehot
  valid = np.arange(cap) < n_lab
  w = np.zeros((m, c), dtype)
  mom, vel = np.zeros_like(w), np.zeros_like(w)
  count = 0
  b1, b2, eps = 0.9, 0.999, 1e-8
  picks, pick_scores = [], []

  for k in range(n_bilevel):
    s = time.perf_counter()
    pairs = np.asarray(
      _pair_indices_jit(
        jax.random.fold_in(inner_key, k), jnp.asarray(valid), n_aug, inner_steps, batch_size
      )
    )
    flat_z = bank_z.reshape(cap * n_aug, m)
    flat_y = np.repeat(bank_y, n_aug, axis=0)
    for step in range(inner_steps):
      zb, yb = flat_z[pairs[step]], flat_y[pairs[step]]
      g = zb.T @ (_softmax(zb @ w) - yb) / batch_size + 2 * l2 * w
      count += 1
      mom = b1 * mom + (1 - b1) * g
      vel = b2 * vel + (1 - b2) * g * g
      w = w - lr * (mom / (1 - b1**count)) / (np.sqrt(vel / (1 - b2**count)) + eps)
    t["inner"] += time.perf_counter() - s

    s = time.perf_counter()
    probs = _softmax(pool_z @ w)  # (P, c)
    grad_g = pool_z.T @ (probs - targets) / p  # (m, c)
    t["outer_grad"] += time.perf_counter() - s

    s = time.perf_counter()
    zv = flat_z[np.repeat(valid, n_aug)]  # (N, m) valid pairs
    pv = _softmax(zv @ w)
    n = zv.shape[0]

    def hvp(u):
      a = zv @ u.reshape(m, c)
      ja = pv * a - pv * np.sum(pv * a, axis=1, keepdims=True)
      return (zv.T @ ja / n + 2 * l2 * u.reshape(m, c)).ravel()

    op = scipy.sparse.linalg.LinearOperator((m * c, m * c), matvec=hvp, dtype=dtype)
    v, _ = scipy.sparse.linalg.cg(op, grad_g.ravel(), rtol=0.0, atol=0.0, maxiter=cg_steps)
    v = v.reshape(m, c).astype(dtype)
    t["cg"] += time.perf_counter() - s

    s = time.perf_counter()
    scores = np.sum((pool_z @ v) * (probs - pseudo), axis=1)
    scores[~available] = -np.inf
    i = int(np.argmax(scores))
    t["scoring"] += time.perf_counter() - s

    s = time.perf_counter()
    copies = np.asarray(bank_fn(bank_params, jax.random.fold_in(bank_key, k), jnp.int32(i)))
    bank_z[n_lab + k], bank_y[n_lab + k], valid[n_lab + k] = copies, pseudo[i], True
    available[i] = False
    picks.append(i)
    pick_scores.append(scores[i])
    t["bank"] += time.perf_counter() - s

  if n_uniform:
    u = np.where(available, np.asarray(jax.random.uniform(uniform_key, (p,), jnp.float32)), -1.0)
    picks.extend(np.argsort(-u, kind="stable")[:n_uniform].tolist())
  return NumpyResult(np.asarray(picks, np.int32), np.asarray(pick_scores), t)
