"""Nystrom features: exact on landmarks, error shrinks with m, finite for rank-deficient K_UU."""

import jax
import numpy as np
import pytest

from bilevel_jax.ntk import kernel_matrix as km
from bilevel_jax.ntk import nystrom
from tests.ntk.conftest import downsample


@pytest.fixture(scope="module")
def ntk_48(fsdd_log_mels):
  """Depth-10 NTK of 48 real FSDD log-mels (16x16 block averages), float32 (48, 48)."""
  x = downsample(fsdd_log_mels(48, seed=3), 2)
  return km.kernel_matrix(x, depth=10, tile=16, progress=False)


def _features(k, idx, rcond=nystrom.DEFAULT_RCOND):
  nmap = nystrom.fit_nystrom(k[np.ix_(idx, idx)], rcond=rcond)
  return np.asarray(nystrom.nystrom_features(k[:, idx], nmap.projection)), nmap


def test_exact_on_landmarks(ntk_48):
  idx = nystrom.draw_landmarks(jax.random.key(0), 48, 12)
  z, nmap = _features(ntk_48, idx)
  assert nmap.rank == 12
  k_uu = ntk_48[np.ix_(idx, idx)]
  np.testing.assert_allclose(z[idx] @ z[idx].T, k_uu, rtol=1e-4, atol=1e-4 * k_uu.max())


def test_error_elsewhere_shrinks_as_m_grows(ntk_48):
  order = np.asarray(jax.random.permutation(jax.random.key(1), 48))
  errors = [
    nystrom.reconstruction_error(ntk_48, _features(ntk_48, np.sort(order[:m]))[0])
    for m in (2, 6, 16, 40)
  ]
  assert all(b < a for a, b in zip(errors, errors[1:])), errors
  assert errors[-1] < 0.1 * errors[0], errors


def test_rank_deficient_landmarks_give_finite_exact_features(ntk_48):
  idx = np.array([0, 1, 2, 2, 3, 3, 3, 7])  # duplicates: K_UU has rank 5
  z, nmap = _features(ntk_48, idx)
  assert nmap.rank == 5
  assert np.all(np.isfinite(z))
  k_uu = ntk_48[np.ix_(idx, idx)]
  np.testing.assert_allclose(z[idx] @ z[idx].T, k_uu, rtol=1e-4, atol=1e-4 * k_uu.max())


def test_smooth_kernel_error_decays_fast(x64):
  x = np.linspace(0.0, 1.0, 200)[:, None]
  k = np.exp(-((x - x.T) ** 2) / 0.1)  # fast-decaying spectrum
  order = np.asarray(jax.random.permutation(jax.random.key(2), 200))
  errors = [
    nystrom.reconstruction_error(k, _features(k, np.sort(order[:m]), rcond=1e-10)[0])
    for m in (3, 6, 12, 40)
  ]
  assert all(b < a for a, b in zip(errors, errors[1:])), errors
  assert errors[-1] < 1e-3, errors


def test_landmarks_deterministic_and_validated():
  a = nystrom.draw_landmarks(jax.random.key(5), 100, 10)
  np.testing.assert_array_equal(a, nystrom.draw_landmarks(jax.random.key(5), 100, 10))
  assert len(set(a.tolist())) == 10 and np.all(np.diff(a) > 0)
  with pytest.raises(ValueError, match="m=101"):
    nystrom.draw_landmarks(jax.random.key(0), 100, 101)
  with pytest.raises(ValueError, match="square"):
    nystrom.fit_nystrom(np.zeros((3, 4)))
  with pytest.raises(ValueError, match="NaN"):
    nystrom.fit_nystrom(np.full((2, 2), np.nan))
