"""Small stand-in for bilevel_jax.audio in tests: (B, 256) 'waveforms' -> (B, 8, 8, 1) features."""

import jax
import jax.numpy as jnp
import numpy as np

T = 256


def featurize(waveforms):
  frames = waveforms.reshape(waveforms.shape[0], 8, 32)
  spec = jnp.abs(jnp.fft.rfft(frames, axis=-1))[..., 1:17]  # (B, 8, 16)
  spec = spec.reshape(spec.shape[0], 8, 8, 2).mean(-1)
  return jnp.log(spec + 1e-3)[..., None]


def augment_and_featurize(key, waveforms, noise):
  k1, k2, k3 = jax.random.split(key, 3)
  b = waveforms.shape[0]
  gain = jax.random.uniform(k1, (b, 1), minval=0.8, maxval=1.2)
  shift = jax.random.randint(k2, (b,), -8, 9)
  rolled = jax.vmap(jnp.roll)(waveforms, shift)
  noisy = rolled * gain + 0.05 * jax.random.normal(k3, (1, 1)) * noise[0, : waveforms.shape[1]]
  return featurize(noisy)


def toy_dataset(n=40, num_classes=4, seed=0):
  """Sinusoids whose frequency encodes the class, with random phase and amplitude."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % num_classes
  t = np.arange(T)
  freq = 2 + 5 * labels[:, None]
  phase = rng.uniform(0, 2 * np.pi, (n, 1))
  amp = rng.uniform(0.5, 1.0, (n, 1))
  waves = amp * np.sin(2 * np.pi * freq * t / 32 + phase) + 0.05 * rng.normal(size=(n, T))
  return waves.astype(np.float32), labels.astype(np.int32)
