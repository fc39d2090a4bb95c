"""Waveform augmentations: each effect against an obvious reference, plus PRNG/jit/vmap laws."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax import audio
from bilevel_jax.audio import augmentations as aug

T = 16000
# Eager dispatch is slow on CPU; tests call jitted versions except where no-jit is the point.
_apply = jax.jit(aug.apply_params)
_augment = jax.jit(aug.augment, static_argnames="return_params")
_augment_one = jax.jit(aug.augment_one)
_sample = jax.jit(aug.sample_params, static_argnums=(1, 2))


def _noise(k=3, length=40000, seed=0) -> jnp.ndarray:
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal((k, length)).astype(np.float32))


def _speechlike(b=4, seed=1) -> jnp.ndarray:
  """Bursts of noise in the middle of the second, silence around (like padded FSDD clips)."""
  rng = np.random.default_rng(seed)
  x = np.zeros((b, T), np.float32)
  x[:, 5000:11000] = 0.3 * rng.standard_normal((b, 6000))
  return jnp.asarray(x)


def _only(batch: int, **fields) -> aug.AugmentParams:
  """Identity parameters with some fields overridden, e.g. apply_gain=True, gain=1.1."""
  p = aug.identity_params(batch)._asdict()
  for name, value in fields.items():
    p[name] = jnp.broadcast_to(jnp.asarray(value, p[name].dtype), (batch,))
  return aug.AugmentParams(**p)


def test_sampled_params_ranges_and_probability():
  p = _sample(jax.random.key(0), 4000, (6, 960000))
  g, s, sh, snr = map(np.asarray, (p.gain, p.speed, p.shift, p.snr_db))
  assert 0.8 <= g.min() and g.max() <= 1.2 and 0.8 <= s.min() and s.max() <= 1.2
  assert -4000 <= sh.min() < -3900 and 3900 < sh.max() <= 4000 and sh.dtype == np.int32
  assert 0.0 <= snr.min() < 1.0 and 39.0 < snr.max() <= 40.0
  assert set(np.unique(p.noise_index)) == set(range(6))
  assert 0 <= int(p.noise_offset.min()) and int(p.noise_offset.max()) <= 960000 - T
  flags = np.stack([p.apply_gain, p.apply_speed, p.apply_shift, p.apply_noise])  # (4, N)
  np.testing.assert_allclose(flags.mean(axis=1), 0.5, atol=0.03)
  # Independent: all four on in ~1/16 of clips.
  assert abs(flags.all(axis=0).mean() - 1 / 16) < 0.015


def test_identity_params_leave_clip_unchanged():
  x = _speechlike()
  np.testing.assert_array_equal(_apply(aug.identity_params(4), x, _noise()), x)


@pytest.mark.parametrize("gain", [0.8, 1.07, 1.2])
def test_amplitude_scales_rms(gain):
  x = _speechlike()
  y = _apply(_only(4, apply_gain=True, gain=gain), x, _noise())
  rms = lambda a: np.sqrt(np.mean(np.asarray(a, np.float64) ** 2, axis=1))
  np.testing.assert_allclose(rms(y) / rms(x), gain, rtol=1e-6)


@pytest.mark.parametrize("shift", [-4000, -1234, 1, 2500, 4000])
def test_shift_moves_onset_by_drawn_samples(shift):
  x = np.zeros((1, T), np.float32)
  x[0, 6000:7000] = np.hanning(1000) + 0.1  # onset exactly at sample 6000
  y = np.asarray(_apply(_only(1, apply_shift=True, shift=shift), jnp.asarray(x), _noise()))[0]
  assert int(np.flatnonzero(y)[0]) == 6000 + shift
  want = np.zeros(T, np.float32)  # zero-filled shift, the obvious way
  if shift >= 0:
    want[shift:] = x[0, : T - shift]
  else:
    want[:shift] = x[0, -shift:]
  np.testing.assert_array_equal(y, want)


def _peak_hz(y: np.ndarray) -> float:
  spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
  return float(np.fft.rfftfreq(y.size, 1 / 16000)[np.argmax(spec)])


@pytest.mark.parametrize("speed", [0.8, 0.913, 1.1, 1.2])
def test_speed_moves_tone_peak_to_u_times_f(speed):
  """'speed x u' = played u times faster: a tone at f Hz moves to u*f Hz."""
  f = 440.0
  x = np.sin(2 * np.pi * f * np.arange(T) / 16000).astype(np.float32)[None]
  y = np.asarray(_apply(_only(1, apply_speed=True, speed=speed), jnp.asarray(x), _noise()))[0]
  assert abs(_peak_hz(x[0]) - f) <= 1.0
  assert abs(_peak_hz(y) - speed * f) <= 2.0
  # Same result as numpy's linear interpolation about the centre, zeros outside.
  pos = 8000 + speed * (np.arange(T) - 8000)
  # Zeros outside the clip, so interpolate on a grid extended by one zero at each end.
  want = np.interp(pos, np.arange(-1, T + 1), np.pad(x[0].astype(np.float64), 1))
  np.testing.assert_allclose(y, want, atol=2e-4)
  # Speed-up compresses: a 0.1 s burst starting at 0.6 s ends earlier / later by 1/u.
  b = np.zeros((1, T), np.float32)
  b[0, 9600:11200] = 1.0
  yb = np.asarray(_apply(_only(1, apply_speed=True, speed=speed), jnp.asarray(b), _noise()))[0]
  support = np.flatnonzero(yb > 0.5)
  assert abs(support.size - 1600 / speed) <= 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measured_snr_equals_drawn_snr(seed):
  key = jax.random.key(seed)
  x, noise = _speechlike(4, seed), _noise(seed=seed)
  p = _sample(key, 4, noise.shape)
  with_noise = p._replace(apply_noise=jnp.ones(4, bool))
  clean = _apply(with_noise._replace(apply_noise=jnp.zeros(4, bool)), x, noise)
  noisy = _apply(with_noise, x, noise)
  added = np.asarray(noisy, np.float64) - np.asarray(clean, np.float64)
  snr = 10 * np.log10(np.mean(np.asarray(clean, np.float64) ** 2, 1) / np.mean(added**2, 1))
  np.testing.assert_allclose(snr, p.snr_db, atol=1e-3)
  # The added signal is the drawn crop of the drawn recording, scaled.
  for i in range(4):
    k, o = int(p.noise_index[i]), int(p.noise_offset[i])
    crop = np.asarray(noise[k, o : o + T], np.float64)
    scale = added[i] @ crop / (crop @ crop)
    np.testing.assert_allclose(added[i], scale * crop, atol=1e-5)


def test_silent_clip_gets_no_noise_and_stays_finite():
  y = _apply(_only(2, apply_noise=True, snr_db=10.0), jnp.zeros((2, T)), _noise())
  np.testing.assert_array_equal(y, 0.0)


def test_same_key_same_output_different_keys_differ():
  x, noise = _speechlike(4), _noise()
  a = _augment(jax.random.key(3), x, noise)
  b = _augment(jax.random.key(3), x, noise)
  c = _augment(jax.random.key(4), x, noise)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert np.mean(np.any(np.asarray(a) != np.asarray(c), axis=1)) >= 0.75


def test_return_params_replays_and_matches_per_example_keys():
  x, noise = _speechlike(4), _noise()
  key = jax.random.key(11)
  y, p = _augment(key, x, noise, return_params=True)
  chex.assert_shape([p.gain, p.shift, p.apply_noise], (4,))
  np.testing.assert_allclose(_apply(p, x, noise), y, rtol=1e-6, atol=1e-7)
  keys = jax.random.split(key, 4)
  for i in range(4):
    np.testing.assert_allclose(_augment_one(keys[i], x[i], noise), y[i], atol=1e-6)


def test_augment_and_featurize_jit_no_jit_and_vmap_over_seeds():
  x, noise = _speechlike(4), _noise()
  key = jax.random.key(5)
  # jit may round the drawn speed 1 ulp differently (an FMA), which moves positions ~8000
  # samples from the centre by ~1e-3 samples; so compare sampling and applying separately.
  p_jit, p_eager = _sample(key, 2, noise.shape), aug.sample_params(key, 2, noise.shape)
  chex.assert_trees_all_close(p_jit, p_eager, rtol=1e-6)
  np.testing.assert_allclose(
    _apply(p_eager, x[:2], noise), aug.apply_params(p_eager, x[:2], noise), rtol=1e-5, atol=1e-6
  )
  step = jax.jit(chex.assert_max_traces(aug.augment_and_featurize, n=1))
  jitted = step(key, x, noise)
  step(jax.random.key(99), x[::-1], noise * 2.0)  # new key, data and noise: no retrace
  chex.assert_shape(jitted, (4, 32, 32, 1))
  np.testing.assert_allclose(jitted, jax.jit(audio.featurize)(_augment(key, x, noise)), atol=1e-3)
  keys = jax.random.split(jax.random.key(6), 2)
  xs = jnp.stack([x, x[::-1]])
  feats = jax.jit(jax.vmap(aug.augment_and_featurize, in_axes=(0, 0, None)))(keys, xs, noise)
  chex.assert_shape(feats, (2, 4, 32, 32, 1))
  batched = jnp.stack([_augment(keys[s], xs[s], noise) for s in range(2)])
  # Features to 1e-3 (0.1 dB): the lowest bins of a frame are ~100 dB below its peak, where
  # float32 FFT rounding depends on fusion.
  np.testing.assert_allclose(feats, jax.jit(jax.vmap(audio.featurize))(batched), atol=1e-3)


def test_raw_uint32_keys_work_and_short_noise_is_rejected():
  x = _speechlike(2)
  y = _augment(jax.random.PRNGKey(0), x, _noise())
  chex.assert_shape(y, (2, T))
  with pytest.raises(ValueError, match="16000"):
    aug.augment(jax.random.key(0), x, jnp.zeros((2, 8000)))


def test_groups_equal_separate_calls_and_reject_mismatch():
  """The batched front end of the MixMatch step against one augment_and_featurize per group."""
  x, noise = _speechlike(5), _noise()
  keys = list(jax.random.split(jax.random.key(7), 2))
  groups = jax.jit(aug.augment_and_featurize_groups)(keys, [x[:2], x[2:]], noise)
  assert aug.augment_and_featurize.groups is aug.augment_and_featurize_groups
  chex.assert_shape(groups, [(2, 32, 32, 1), (3, 32, 32, 1)])
  separate = jax.jit(
    lambda k0, k1: [
      aug.augment_and_featurize(k0, x[:2], noise),
      aug.augment_and_featurize(k1, x[2:], noise),
    ]
  )(*keys)
  # Same draws, same arithmetic per group (features ~0..1).
  for got, want in zip(groups, separate):
    np.testing.assert_allclose(got, want, atol=2e-5)
  with pytest.raises(ValueError, match="2 keys for 1 waveform groups"):
    aug.augment_and_featurize_groups(keys, [x], noise)
