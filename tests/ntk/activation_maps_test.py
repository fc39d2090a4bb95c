"""Closed-form (leaky) ReLU maps of the kernel against numerical Gaussian integration.

These are the per-layer terms of the kernel recursion; a 1% error in either map fails both
checks here (the quadrature by ~1000x its tolerance; the Monte-Carlo check, 4 standard errors,
asserts its resolution: 1% of each map > 8 standard errors for rho >= 0). The whole-network Monte-Carlo tests in wrn_kernel_test.py cannot
resolve 1% (finite-width fluctuations of a depth-10 residual net are several % per init).
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.ntk import arccos
from bilevel_jax.ntk import wrn_kernel as wk

Q11, Q22 = 1.7, 0.6
RHOS = np.array([-0.999, -0.95, -0.5, 0.0, 0.3, 0.8, 0.99, 1.0])


def _phi(u, a):
  return np.where(u > 0, u, a * u)


def _dphi(u, a):
  return np.where(u > 0, 1.0, a)


def _quadrature(rho, a, n=1 << 20):
  """E[phi(u) phi(v)], E[phi'(u) phi'(v)] by the midpoint rule over the angle of (u, v).

  (u, v) = L z, z = r (cos t, sin t): phi is homogeneous, so the radial integral is E[r^2] = 2
  for the first map and 1 for the second; the angular integrands are piecewise smooth (error
  O(1 / n) from their jumps).
  """
  q12 = rho * math.sqrt(Q11 * Q22)
  l = np.linalg.cholesky(np.array([[Q11, q12], [q12, Q22 + 1e-300]]) + np.diag([0, 1e-15]))
  t = (np.arange(n) + 0.5) * (2 * math.pi / n)
  e = np.stack([np.cos(t), np.sin(t)])
  u, v = l @ e
  return 2.0 * np.mean(_phi(u, a) * _phi(v, a)), np.mean(_dphi(u, a) * _dphi(v, a))


def _closed_form(a):
  q12 = RHOS * math.sqrt(Q11 * Q22)
  nngp, dot = arccos.activation_maps(
    jnp.full(RHOS.shape, Q11), jnp.full(RHOS.shape, Q22), jnp.asarray(q12), a
  )
  return np.asarray(nngp), np.asarray(dot)


@pytest.mark.parametrize("slope", [0.0, 0.1, 0.3])
def test_maps_match_angular_quadrature(x64, slope):
  got_nngp, got_dot = _closed_form(slope)
  want = np.array([_quadrature(r, slope) for r in RHOS])
  scale = math.sqrt(Q11 * Q22)
  np.testing.assert_allclose(got_nngp / scale, want[:, 0] / scale, atol=1e-5)
  np.testing.assert_allclose(got_dot, want[:, 1], atol=1e-5)
  # Diagonal (rho = 1): the variance gain (1 + a^2) / 2 that input_stats uses.
  np.testing.assert_allclose(got_dot[-1], 0.5 * (1 + slope**2), rtol=1e-12)


def _mc_moments(rho, a, n_chunks=8, chunk=1 << 21):
  """Monte-Carlo means and standard errors of phi(u) phi(v) and phi'(u) phi'(v) over
  n_chunks * chunk samples (drawn chunk by chunk to bound memory)."""
  rng = np.random.default_rng(0)
  sums = np.zeros((2, 2))  # [map][sum, sum of squares]
  for _ in range(n_chunks):
    z = rng.standard_normal((2, chunk))
    u = math.sqrt(Q11) * z[0]
    v = math.sqrt(Q22) * (rho * z[0] + math.sqrt(1 - rho**2) * z[1])
    for k, s in enumerate((_phi(u, a) * _phi(v, a), _dphi(u, a) * _dphi(v, a))):
      sums[k] += s.sum(), (s * s).sum()
  n = n_chunks * chunk
  mean = sums[:, 0] / n
  return mean, np.sqrt((sums[:, 1] / n - mean**2) / n)


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_maps_match_monte_carlo_within_standard_errors(x64, slope):
  got = _closed_form(slope)
  for i, rho in enumerate(RHOS[1:-1], start=1):
    mean, se = _mc_moments(rho, slope)
    for k in range(2):
      closed = got[k][i]
      assert abs(mean[k] - closed) < 4 * se[k], (rho, k, mean[k], closed, se[k])
      if rho >= 0:  # resolution: a term off by 1% would be > 4 SE away (near rho = -1 the
        # values approach 0 and 1% of them is below it)
        assert 0.01 * abs(closed) > 8 * se[k], (rho, k, closed, se[k])
        assert abs(mean[k] - 1.01 * closed) > 4 * se[k], (rho, k, mean[k], closed, se[k])


def test_relu_is_the_slope_zero_case(x64):
  # The maps: slope 0 is the arc-cosine kernel of ReLU (jnp.arccos, written out here), and the
  # leaky maps are continuous in the slope at 0.
  theta = np.arccos(RHOS)
  relu_nngp = math.sqrt(Q11 * Q22) * (np.sin(theta) + (math.pi - theta) * RHOS) / (2 * math.pi)
  relu_dot = (math.pi - theta) / (2 * math.pi)
  got = _closed_form(0.0)
  np.testing.assert_allclose(got[0], relu_nngp, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(got[1], relu_dot, rtol=1e-12)
  tiny = _closed_form(1e-7)
  np.testing.assert_allclose(tiny[0], relu_nngp, atol=1e-6)
  np.testing.assert_allclose(tiny[1], relu_dot, atol=1e-6)


@pytest.mark.parametrize("final", [False, True])
def test_relu_kernel_is_leaky_relu_with_slope_zero(final):
  x = np.random.default_rng(1).normal(size=(3, 8, 8, 1)).astype(np.float32)
  relu = wk.wrn_kernel(x, depth=10, activation="relu", final_activation=final)
  leaky0 = wk.wrn_kernel(
    x, depth=10, activation="leaky_relu", leaky_slope=0.0, final_activation=final
  )
  leaky = wk.wrn_kernel(
    x, depth=10, activation="leaky_relu", leaky_slope=1e-4, final_activation=final
  )
  np.testing.assert_array_equal(relu.ntk, leaky0.ntk)
  np.testing.assert_array_equal(relu.nngp, leaky0.nngp)
  # The leaky branch as a -> 0: each of the 9 activations moves the kernel by O(a).
  np.testing.assert_allclose(leaky.ntk, relu.ntk, rtol=50 * 1e-4)
  assert not np.allclose(leaky.ntk, relu.ntk, rtol=1e-5)


@pytest.mark.parametrize(
  "bad,match",
  [
    (dict(activation="tanh"), "activation='tanh'"),
    (dict(activation="leaky_relu", leaky_slope=1.0), "leaky_slope=1.0"),
    (dict(activation="leaky_relu", leaky_slope=-0.1), "leaky_slope=-0.1"),
  ],
)
def test_bad_activation_raises(bad, match):
  with pytest.raises(ValueError, match=match):
    wk.wrn_kernel(np.zeros((1, 8, 8, 1), np.float32), depth=10, **bad)
