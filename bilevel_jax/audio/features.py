"""Log-mel features in JAX: (B, 16000) waveforms at 16 kHz -> (B, 32, 32, 1) images.

STFT with a periodic Hann window of 2048 samples, hop 512, frames centered with zero
padding of 1024 samples on both sides (librosa's `center=True, pad_mode="constant"`), so a
1 s clip gives exactly 1 + 16000 // 512 = 32 frames. Power spectrum -> 32 Slaney mel bands
(librosa.filters.mel defaults, 0-8 kHz; the only host-side step, built once) -> dB.

Log compression (chosen once, used everywhere):
  log_mel = 10 * log10(max(mel_power, 1e-10))
which is exactly `librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None)`.

Accuracy in float32 (measured against librosa in float64 on all 563 Speech Commands sample
clips and all 3000 FSDD clips, benchmarks/results/log_mel_accuracy.json; tested on real clips):
float32 FFT round-off is relative to a frame's energy, so it depends on how far a bin lies
below the clip's loudest bin: max |error| 6e-5 dB within 60 dB of it, 3.4e-4 dB within 80 dB.
Bins further down lose more: up to 2.1e-3 dB among bins above -80 dB (absolute) and 0.02 dB
anywhere. In float64 (jax_enable_x64) the error is below 1e-8 dB.

Normalization for the network: `featurize` returns (log_mel + 100) / 100, i.e. dB above the
-100 dB floor in units of 100 dB. Digital silence (the zero padding of short clips) maps to
exactly 0 and full-scale speech to about 1. This map is fixed (no dataset statistics), so
it keeps amplitude augmentation meaningful and is identical for every dataset and seed. The
networks then see these features standardized once more by two scalars of the training set
(mean and std of the un-augmented features of its first 512 clips): `ssl.state.feature_stats`,
stored with each trained classifier and applied alike to augmented and clean clips.

Image layout: features[b, m, t, 0] is mel band m (low to high) at frame t, the same
orientation as librosa's (n_mels, n_frames) output.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000
NUM_SAMPLES = 16000  # exactly 1 s
N_FFT = 2048
HOP = 512
N_MELS = 32
NUM_FRAMES = 1 + NUM_SAMPLES // HOP  # 32 with centered frames
assert N_FFT % HOP == 0
AMIN = 1e-10  # power floor of the dB conversion (-100 dB)
FLOOR_DB = -100.0
SCALE_DB = 100.0


@functools.lru_cache(maxsize=None)
def mel_filterbank(dtype: str = "float32") -> np.ndarray:
  """Slaney mel filterbank, (N_MELS, N_FFT // 2 + 1), built once on the host."""
  import librosa  # pylint: disable=import-outside-toplevel

  fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, dtype=np.float64)
  return fb.astype(dtype)


@functools.lru_cache(maxsize=None)
def hann_window(dtype: str = "float32") -> np.ndarray:
  """Periodic Hann window of N_FFT samples (scipy `get_window("hann", N_FFT)`)."""
  n = np.arange(N_FFT, dtype=np.float64)
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(dtype)


def _float_dtype(x: jax.Array) -> jnp.dtype:
  return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32


def power_spectrogram(waveforms: jax.Array) -> jax.Array:
  """|STFT|^2 of centered frames. waveforms: (B, T) -> (B, 1 + T // HOP, N_FFT // 2 + 1)."""
  chex.assert_rank(waveforms, 2)
  dtype = _float_dtype(waveforms)
  x = jnp.asarray(waveforms, dtype)
  num_frames = 1 + x.shape[1] // HOP
  x = jnp.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2)))  # librosa center=True, pad_mode="constant"
  # Frame t = samples [HOP t, HOP t + N_FFT) = hop-sized blocks t .. t + N_FFT / HOP - 1. Slicing
  # blocks is ~1.5x faster on CPU than a gather (which XLA fuses with the augmentation and
  # recomputes for every overlapping frame).
  per = N_FFT // HOP
  num_blocks = num_frames + per - 1
  blocks = x[:, : num_blocks * HOP].reshape(x.shape[0], num_blocks, HOP)
  frames = jnp.concatenate([blocks[:, i : i + num_frames] for i in range(per)], axis=-1)
  frames = frames * jnp.asarray(hann_window(np.dtype(dtype).name))  # (B, F, N_FFT)
  spec = jnp.fft.rfft(frames, axis=-1)  # (B, F, N_FFT // 2 + 1)
  return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


def mel_power(waveforms: jax.Array) -> jax.Array:
  """Mel power spectrogram. waveforms: (B, 16000) -> (B, N_MELS, NUM_FRAMES)."""
  spec = power_spectrogram(waveforms)
  fb = jnp.asarray(mel_filterbank(np.dtype(spec.dtype).name))  # (M, K)
  return jnp.einsum("mk,bfk->bmf", fb, spec, precision=jax.lax.Precision.HIGHEST)


def log_mel(waveforms: jax.Array) -> jax.Array:
  """Log-mel in dB, 10 log10(max(mel, 1e-10)). waveforms: (B, 16000) -> (B, 32, 32)."""
  chex.assert_shape(waveforms, (None, NUM_SAMPLES))
  mel = mel_power(waveforms)
  return 10.0 * jnp.log10(jnp.maximum(mel, AMIN))


def normalize_log_mel(log_mel_db: jax.Array) -> jax.Array:
  """The fixed affine map to network inputs: (dB + 100) / 100; silence -> 0."""
  return (log_mel_db - FLOOR_DB) / SCALE_DB


def featurize(waveforms: jax.Array) -> jax.Array:
  """Network inputs without augmentation. waveforms: (B, 16000) -> (B, 32, 32, 1).

  Equals normalize_log_mel(log_mel(waveforms)); computed as log10(max(mel, amin) / amin) so
  that the floor (silence) is exactly 0 under jit too.
  """
  chex.assert_shape(waveforms, (None, NUM_SAMPLES))
  mel = mel_power(waveforms)
  feats = (10.0 / SCALE_DB) * jnp.log10(jnp.maximum(mel, AMIN) / AMIN)[..., None]
  chex.assert_shape(feats, (waveforms.shape[0], N_MELS, NUM_FRAMES, 1))
  return feats
