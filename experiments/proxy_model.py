"""The proxy model of `experiments.bilevel_evidence`: L2 logistic regression on Nystrom features
(of the labeled points' augmented copies, or of their clean clips), fitted as the bilevel inner
problem is (Adam, `bilevel.inner.fit_inner`), and its L-BFGS optimum as a check.

`run` is the experiment's `Run` (config with the `bilevel` block, training `classes`,
`num_classes`); `feats` its `Inputs` for m landmarks (`m`, `train_z`, `banks(indices)`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax.bilevel import inner


def fit_model(run: Any, feats: Any, labeled, key, clean: bool = False):
  """Returns (w (m, c), loss): Adam (inner.fit_inner) with true labels on the labeled points'
  banks of augmented copies, or on their clean features when `clean`."""
  b, c = run.config.bilevel, run.num_classes
  labels = run.classes[np.asarray(labeled)]
  z = feats.train_z[np.asarray(labeled)][:, None] if clean else feats.banks(labeled)
  bank = inner.Bank(
    jnp.asarray(z), jax.nn.one_hot(jnp.asarray(labels), c), jnp.ones(len(labeled), bool)
  )
  state = inner.init_inner_state(jnp.zeros((feats.m, c), jnp.float32))
  state, loss = inner.fit_inner(
    key,
    state,
    bank,
    b.lr,
    b.l2,
    steps=b.inner_steps,
    batch_size=b.inner_batch_size or None,
    reduction=b.get("loss_reduction", "mean"),
  )
  return state.w, float(loss)


def lbfgs_objective(run: Any, feats: Any, labeled) -> float:
  """Optimum of the model's objective (full batch, scipy L-BFGS, float64): a check that Adam
  with the configured lr / inner_steps actually solves it."""
  import scipy.optimize  # pylint: disable=g-import-not-at-top

  m, c, l2 = feats.m, run.num_classes, run.config.bilevel.l2
  z = feats.banks(labeled).astype(np.float64)
  y = np.eye(c)[run.classes[np.asarray(labeled)]]
  a = z.shape[1]

  def f(wf):
    w = wf.reshape(m, c)
    logits = np.einsum("sam,mc->sac", z, w)
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    val = -np.mean(np.sum(y[:, None] * np.log(np.maximum(p, 1e-300)), -1)) + l2 * wf @ wf
    g = np.einsum("sam,sac->mc", z, p - y[:, None]) / (len(z) * a) + 2 * l2 * w
    return val, g.ravel()

  res = scipy.optimize.minimize(
    f,
    np.zeros(m * c),
    jac=True,
    method="L-BFGS-B",
    options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15},
  )
  return float(res.fun)


def class_covering_labels(classes: np.ndarray, c: int, seed: int) -> np.ndarray:
  """One random training index per class (the paper's class-covering initial pool)."""
  rng = np.random.default_rng(1000 + seed)
  return np.array([rng.choice(np.flatnonzero(classes == k)) for k in range(c)], np.int32)


def softmax(a):
  a = a - a.max(axis=1, keepdims=True)
  e = np.exp(a)
  return e / e.sum(axis=1, keepdims=True)
