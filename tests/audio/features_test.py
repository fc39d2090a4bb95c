"""Log-mel in JAX against librosa on real FSDD and Speech Commands clips."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from bilevel_jax import audio
from bilevel_jax.data import decode

# Module-level jitted functions so tests share compilations (eager dispatch is slow on CPU);
# test_jit_equals_no_jit is the one that runs eagerly.
_log_mel = jax.jit(audio.log_mel)
_featurize = jax.jit(audio.featurize)

CLIPS = (
  "recordings/0_jackson_7.wav",
  "recordings/3_theo_22.wav",
  "recordings/7_george_3.wav",
  "recordings/9_yweweler_45.wav",
)


@pytest.fixture(scope="module")
def fsdd_clips(fsdd_root) -> np.ndarray:
  return np.stack([decode.load_clip(fsdd_root / c) for c in CLIPS])  # (4, 16000)


def _librosa_log_mel(y: np.ndarray, dtype=np.float32) -> np.ndarray:
  mel = librosa.feature.melspectrogram(
    y=y,
    sr=16000,
    n_fft=2048,
    hop_length=512,
    n_mels=32,
    window="hann",
    center=True,
    pad_mode="constant",
    power=2.0,
    dtype=dtype,
  )
  return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)


# Real Speech Commands clips: the one with the largest float32 error of the 563-clip sample
# (benchmarks/results/log_mel_accuracy.json: band 31, frame 14, 0.0015 dB at -76.7 dB, 94 dB
# below the clip's peak) and one clip of a few other words.
SC_CLIPS = (
  "nine/7257420c_nohash_0.wav",
  "yes/022cd682_nohash_0.wav",
  "zero/0fa1e7a9_nohash_2.wav",
  "bed/0ea0e2f4_nohash_1.wav",
  "wow/3b4f8f24_nohash_0.wav",
)


def _check_float32_accuracy(clips: np.ndarray) -> None:
  """The stated float32 accuracy (features.py docstring) against librosa in float64.

  float32 FFT round-off is relative to a frame's energy, so quiet bins next to loud ones lose
  digits: <= 1e-4 dB within 60 dB of the clip's loudest bin, <= 5e-4 dB within 80 dB,
  <= 3e-3 dB on every bin above -80 dB, <= 0.05 dB anywhere.
  """
  got = np.asarray(_log_mel(jnp.asarray(clips, jnp.float32))).astype(np.float64)
  ref = np.stack([_librosa_log_mel(y.astype(np.float64), dtype=np.float64) for y in clips])
  assert got.shape == ref.shape == (len(clips), 32, 32)
  below_peak = ref.max(axis=(1, 2), keepdims=True) - ref
  diff = np.abs(got - ref)
  assert (below_peak < 60).mean() > 0.2 and ref.min() < -80.0  # speech and quiet bins present
  assert diff[below_peak < 60].max() <= 1e-4
  assert diff[below_peak < 80].max() <= 5e-4
  assert diff[ref > -80.0].max() <= 3e-3
  assert diff.max() <= 0.05


def test_float32_accuracy_on_real_fsdd_clips(fsdd_clips):
  _check_float32_accuracy(fsdd_clips)


def test_float32_accuracy_on_real_speech_commands_clips(speech_commands_sample_root):
  clips = np.stack([decode.load_clip(speech_commands_sample_root / c) for c in SC_CLIPS])
  _check_float32_accuracy(clips)
  # The bin the issue found: more than 1e-3 dB off at about -77 dB, within the stated bound.
  got = np.asarray(_log_mel(jnp.asarray(clips[:1])))[0, 31, 14]
  want = _librosa_log_mel(clips[0].astype(np.float64), dtype=np.float64)[31, 14]
  assert -80.0 < want < -70.0 and 1e-3 < abs(got - want) <= 3e-3


def test_matches_librosa_float32_pipeline(fsdd_clips):
  """Against librosa's float32 pipeline (whose FFT runs in float64) the same bounds hold."""
  got = np.asarray(_log_mel(jnp.asarray(fsdd_clips)))
  want = np.stack([_librosa_log_mel(y) for y in fsdd_clips])
  assert want.max() > 0.0 and want.min() <= -99.0  # speech and silent padding both present
  loud = want > -80.0
  np.testing.assert_allclose(got[loud], want[loud], rtol=0, atol=3e-3)
  np.testing.assert_allclose(got, want, rtol=0, atol=0.05)


def test_matches_librosa_float64(fsdd_clips, x64):
  """float64 JAX vs librosa in float64 (float64 filterbank): max |diff| <= 1e-8 dB."""
  del x64
  y = fsdd_clips.astype(np.float64)
  got = np.asarray(_log_mel(jnp.asarray(y)))
  assert got.dtype == np.float64
  want = np.stack([_librosa_log_mel(c, dtype=np.float64) for c in y])
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)


def test_power_spectrogram_matches_librosa_stft(x64):
  del x64
  y = np.random.default_rng(0).standard_normal((2, 16000))
  got = np.asarray(jax.jit(audio.features.power_spectrogram)(jnp.asarray(y)))  # (B, F, K)
  want = np.stack([np.abs(librosa.stft(c, n_fft=2048, hop_length=512)) ** 2 for c in y])
  np.testing.assert_allclose(got, np.swapaxes(want, 1, 2), rtol=1e-9, atol=1e-9)


def test_featurize_shape_layout_and_normalization(fsdd_clips):
  x = jnp.asarray(fsdd_clips)
  feats = _featurize(x)
  chex.assert_shape(feats, (4, 32, 32, 1))
  assert feats.dtype == jnp.float32
  np.testing.assert_allclose(feats[..., 0], (_log_mel(x) + 100.0) / 100.0, atol=1e-5)
  silent = _featurize(jnp.zeros((4, 16000)))
  np.testing.assert_array_equal(silent, 0.0)  # digital silence -> exactly 0


def test_layout_mel_then_time():
  """A 3 kHz tone burst in the last 0.25 s lights up high mel bands in late frames only."""
  t = np.arange(16000) / 16000
  y = np.where(t >= 0.75, np.sin(2 * np.pi * 3000 * t), 0.0).astype(np.float32)
  f = np.asarray(_featurize(jnp.asarray(np.tile(y, (4, 1)))))[0, :, :, 0]  # (mel, time)
  mel_peak = int(np.argmax(f[:, -2]))
  band_centres = librosa.mel_frequencies(n_mels=34, fmax=8000)[1:-1]
  assert abs(band_centres[mel_peak] - 3000) < 300
  assert f[:, :20].max() == 0.0 and f[:, -4:].max() > 0.5


def test_jit_equals_no_jit_and_rejects_wrong_length(fsdd_clips):
  x = jnp.asarray(fsdd_clips)
  np.testing.assert_allclose(_featurize(x), audio.featurize(x), atol=1e-5)
  with pytest.raises(AssertionError):
    audio.featurize(jnp.zeros((2, 8000)))
