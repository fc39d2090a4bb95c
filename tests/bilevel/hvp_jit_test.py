"""Regression test: jitted forward-over-reverse HVPs of the inner objective match eager ones.

With `jax.nn.log_softmax` in the cross-entropy, XLA:CPU (jax 0.10.2) returned wrong values or
NaN for the jitted HVP at c = 35 when the bank had an empty slot, which stalled CG inside
`select_batch` (picks 0, 1, 2, ...). The cross-entropy is now written with logsumexp.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.bilevel import ihvp
from bilevel_jax.bilevel import inner


@pytest.mark.parametrize("shape", [(51, 16, 500, 35), (21, 8, 128, 35), (11, 4, 64, 10)])
def test_jit_hvp_matches_eager_and_dense(shape):
  s, a, m, c = shape
  rng = np.random.default_rng(0)
  z = rng.normal(size=(s, a, m)).astype(np.float32) * 0.05
  y = np.eye(c, dtype=np.float32)[rng.integers(0, c, s)]
  z[-1], y[-1] = 0.0, 0.0  # an empty slot, as in the fixed-capacity bank
  bank = inner.Bank(jnp.asarray(z), jnp.asarray(y), jnp.arange(s) < s - 1)
  w = jnp.asarray(rng.normal(size=(m, c)), jnp.float32)
  u = jnp.asarray(rng.normal(size=(m, c)), jnp.float32) * 0.01

  def hvp(w, u, bank):
    return ihvp.hvp(lambda q: inner.bank_objective(q, bank, jnp.float32(1e-4)), w, u)

  got = jax.jit(hvp)(w, u, bank)
  # Dense float64 reference: H u = sum_x weight_x z_x (diag(p) - p p^T)(z_x^T u) + 2 l2 u.
  zz, ww, uu = (np.asarray(t, np.float64) for t in (z, w, u))
  logits = np.einsum("sam,mc->sac", zz, ww)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  zu = np.einsum("sam,mc->sac", zz, uu)
  hzu = p * zu - p * (p * zu).sum(-1, keepdims=True)
  weight = (np.arange(s) < s - 1) / (a * (s - 1))
  want = np.einsum("sam,sac->mc", zz, hzu * weight[:, None, None]) + 2e-4 * uu
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-3, atol=1e-7 * np.abs(want).max())
