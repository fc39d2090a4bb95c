"""Nystrom features and augmented-copy banks of the bilevel strategy."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bilevel_jax.ntk import features as kernel
from bilevel_jax.strategies import inputs


def test_nystrom_map_is_pinv_sqrt(x64):
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 4))
  k = a @ a.T  # rank 4 of 6: needs the pseudo-inverse
  m = kernel.nystrom_map(k).astype(np.float64)
  np.testing.assert_allclose(m @ k @ m, np.linalg.pinv(k) @ k, atol=1e-4)
  z = k @ m  # features of the landmarks themselves
  np.testing.assert_allclose(z @ z.T, k, rtol=1e-4, atol=1e-4)


def _config(m=4, n_aug=2, **ntk):
  c = ml_collections.ConfigDict()
  c.bilevel = ml_collections.ConfigDict(
    dict(
      landmarks=m,
      landmark_seed=0,
      augmentations=n_aug,
      ntk_depth=10,
      kernel="ntk",
      kernel_chunk=4,
      uniform_fraction=0.1,
      lr=1e-3,
      l2=1e-4,
      inner_steps=5,
      inner_batch_size=0,
      cg_steps=3,
      **ntk,
    )
  )
  return c


def test_features_and_banks(tmp_path, monkeypatch):
  monkeypatch.setenv("BILEVEL_JAX_CACHE", str(tmp_path))
  rng = np.random.default_rng(1)
  waves = (0.1 * rng.normal(size=(10, 16000))).astype(np.float32)
  noise = (0.01 * rng.normal(size=(1, 20000))).astype(np.float32)
  kf = kernel.KernelFeatures(_config().bilevel, waves, noise, tag="synthetic")
  assert kf.features.shape == (10, 4)
  # Nystrom reproduces the kernel between landmarks: z_u . z_v = k(u, v).
  x = kf._clean_x(kf.landmark_idx)
  assert kf.arch == dict(depth=10, activation="relu", leaky_slope=0.0, final_activation=False)
  k_uu = np.asarray(kernel._kernel_fn(kf.arch, "ntk")(jnp.asarray(x), jnp.asarray(x)))
  z = kf.features[kf.landmark_idx]
  np.testing.assert_allclose(z @ z.T, k_uu, rtol=2e-3, atol=2e-3 * np.abs(k_uu).max())

  stream = jax.random.key(5)
  fields = kf.context_fields(0, np.array([3, 7]), stream)
  assert fields["bank"].shape == (2, 2, 4)
  assert np.all(np.isfinite(fields["bank"]))
  # The in-jit bank function (greedy picks) makes the same copies as the cached labeled bank.
  copies = jax.jit(kf.bank_fn)(fields["bank_params"], jax.random.key(99), jnp.int32(7))
  np.testing.assert_allclose(copies, fields["bank"][1], rtol=1e-4, atol=1e-4)
  # Augmented copies differ from each other and from the clean features.
  assert not np.allclose(fields["bank"][0, 0], fields["bank"][0, 1])
  # Disk cache: a second instance loads the same features without recomputing.
  again = kernel.KernelFeatures(_config().bilevel, waves, noise, tag="synthetic")
  np.testing.assert_array_equal(again.features, kf.features)
  assert len(list((tmp_path / "al_kernel").glob("synthetic_*.npz"))) == 1
  # k(X, U) went through the shared, resumable landmark-kernel cache.
  assert len(list((tmp_path / "ntk").glob("*/meta.json"))) == 1
  # The legacy kernel named explicitly is the same cache entry as a config without the keys
  # (committed results); the trained WRN's kernel is another entry, in both caches.
  legacy = dict(ntk_activation="relu", ntk_leaky_slope=0.0, ntk_final_activation=False)
  kernel.KernelFeatures(_config(**legacy).bilevel, waves, noise, tag="synthetic")
  assert len(list((tmp_path / "al_kernel").glob("synthetic_*.npz"))) == 1
  leaky = kernel.KernelFeatures(
    _config(ntk_activation="leaky_relu", ntk_leaky_slope=0.1, ntk_final_activation=True).bilevel,
    waves,
    noise,
    tag="synthetic",
  )
  assert len(list((tmp_path / "al_kernel").glob("synthetic_*.npz"))) == 2
  assert len(list((tmp_path / "ntk").glob("*/meta.json"))) == 2
  x = leaky._clean_x(leaky.landmark_idx)
  k_leaky = np.asarray(kernel._kernel_fn(leaky.arch, "ntk")(jnp.asarray(x), jnp.asarray(x)))
  z = leaky.features[leaky.landmark_idx]
  np.testing.assert_allclose(z @ z.T, k_leaky, rtol=2e-3, atol=2e-3 * np.abs(k_leaky).max())
  assert not np.allclose(k_leaky, k_uu, rtol=0.05)


def test_check_config_names_the_entry():
  kernel.check_config(_config().bilevel, num_train=10)
  with pytest.raises(ValueError, match=r"config.bilevel.landmarks=11; expected 1 <= m <= 10"):
    kernel.check_config(_config(m=11).bilevel, num_train=10)
  kernel.check_config(_config(m=11).bilevel)  # the size is checked once the data is loaded
  with pytest.raises(ValueError, match=r"config.bilevel.augmentations=0; expected >= 1"):
    kernel.check_config(_config(n_aug=0).bilevel)
  bad = _config()
  bad.bilevel.kernel = "rbf"
  with pytest.raises(ValueError, match=r"config.bilevel.kernel='rbf'; expected 'ntk' or 'nngp'"):
    kernel.check_config(bad.bilevel)
  with pytest.raises(ValueError, match=r"config.bilevel: activation='tanh'"):
    kernel.check_config(_config(ntk_activation="tanh").bilevel)
  with pytest.raises(ValueError, match=r"config.bilevel: leaky_slope=1.5"):
    kernel.check_config(_config(ntk_activation="leaky_relu", ntk_leaky_slope=1.5).bilevel)
  with pytest.raises(ValueError, match="landmarks=11"):
    kernel.KernelFeatures(
      _config(m=11).bilevel,
      np.zeros((10, 16000), np.float32),
      np.zeros((1, 20000), np.float32),
      tag="x",
    )


class _Data(NamedTuple):
  name: str
  train_waveforms: np.ndarray
  noise: np.ndarray


def test_strategy_prepare_builds_the_same_inputs(tmp_path, monkeypatch):
  """The bilevel strategy's prepare hook (what the AL loop calls, by config block only) gives
  the features, banks and options the loop built itself before (al.kernel.prepare and
  loop.strategy_options), and other experiments' copies of the test clips agree with k(X, U)."""
  monkeypatch.setenv("BILEVEL_JAX_CACHE", str(tmp_path))
  rng = np.random.default_rng(2)
  waves = (0.1 * rng.normal(size=(12, 16000))).astype(np.float32)
  noise = (0.01 * rng.normal(size=(1, 20000))).astype(np.float32)
  config = _config(m=5)
  prepared = inputs.prepare("bilevel", config, _Data("synthetic", waves, noise))
  direct = kernel.KernelFeatures(config.bilevel, waves, noise, tag="synthetic_12")
  b = config.bilevel
  want = dict(
    uniform_fraction=b.uniform_fraction,
    lr=b.lr,
    l2=b.l2,
    inner_steps=b.inner_steps,
    batch_size=None,
    cg_steps=b.cg_steps,
  )  # inner_batch_size 0 -> batch_size None: the full bank
  assert {k: v for k, v in prepared.options.items() if k != "bank_fn"} == want
  assert callable(prepared.options["bank_fn"])
  labeled, stream = np.array([4, 1, 9]), jax.random.key(3)
  got, ref = prepared.context(0, labeled, stream), direct.context_fields(0, labeled, stream)
  np.testing.assert_array_equal(got["features"], ref["features"])
  np.testing.assert_array_equal(got["bank"], ref["bank"])
  # Both hit one cache entry (same tag and key as the loop used before).
  assert len(list((tmp_path / "al_kernel").glob("synthetic_12_*.npz"))) == 1
  # features_of (a test split) on training clips reproduces their training features.
  np.testing.assert_allclose(
    direct.features_of(waves[:3]),
    direct.features[:3],
    rtol=1e-4,
    atol=1e-4 * np.abs(direct.features).max(),
  )


def test_loop_checks_the_block_through_the_strategy():
  bad = _config(n_aug=0)
  with pytest.raises(ValueError, match=r"config.bilevel.augmentations=0"):
    inputs.check_config("bilevel", bad)
  inputs.check_config("uniform", bad)  # no block, nothing to check
  assert inputs.prepare("uniform", bad, None).options == {}
