"""Background noise: the six official recordings, custom folders, and the generated fallback."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from bilevel_jax import data
from bilevel_jax.data import noise as noise_lib
from bilevel_jax.utils import paths
from tests.data import helpers


def test_official_noise_recordings(speech_commands_sample_root):
  noise = data.load_background_noise(speech_commands_sample_root.parent)
  folder = speech_commands_sample_root / "_background_noise_"
  lengths = [sf.info(str(folder / f)).frames for f in noise_lib.OFFICIAL_FILES]
  assert noise.shape == (6, min(lengths)) and noise.dtype == np.float32
  for k, name in enumerate(noise_lib.OFFICIAL_FILES):  # sorted order, cropped to the shortest
    raw, _ = sf.read(str(folder / name), dtype="float32", frames=noise.shape[1])
    np.testing.assert_array_equal(noise[k], raw)


def test_custom_folder_resampled_and_mixed_down(tmp_path):
  folder = tmp_path / "_background_noise_"
  helpers.write_wav(folder / "a.wav", np.stack([helpers.tone(100, 3, 8000)] * 2, 1), 8000)
  helpers.write_wav(folder / "b.wav", helpers.tone(200, 2.5, 22050), 22050)
  noise = data.load_background_noise(tmp_path)
  assert noise.shape == (2, 40000)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    data.load_background_noise(noise_dir=tmp_path / "nowhere")


def test_bad_noise_file_is_named(tmp_path):
  folder = tmp_path / "_background_noise_"
  helpers.write_wav(folder / "a.wav", helpers.tone(100, 3, 16000), 16000)
  (folder / "broken.wav").write_text("not audio")
  with pytest.raises(data.BadAudioError, match="broken.wav"):
    data.load_background_noise(noise_dir=folder)
  (folder / "broken.wav").unlink()
  helpers.write_wav(folder / "short.wav", helpers.tone(100, 0.5, 16000), 16000)
  with pytest.raises(data.BadAudioError, match="short.wav.*shorter than 1 s"):
    data.load_background_noise(noise_dir=folder)


def test_fallback_is_logged_and_is_white_and_pink(tmp_path, caplog):
  with caplog.at_level(logging.WARNING, logger="bilevel_jax.data.noise"):
    noise = data.load_background_noise(tmp_path)
  assert "FALLBACK" in caplog.text and "white and pink" in caplog.text
  assert noise.shape == (2, 60 * 16000) and noise.dtype == np.float32
  np.testing.assert_allclose(np.sqrt(np.mean(noise.astype(np.float64) ** 2, 1)), 0.1, rtol=1e-4)
  freqs = np.fft.rfftfreq(noise.shape[1], 1 / 16000)
  band = (freqs > 50) & (freqs < 5000)
  slopes = []
  for row in noise:
    power = np.abs(np.fft.rfft(row.astype(np.float64))) ** 2
    slopes.append(np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0])
  assert abs(slopes[0]) < 0.05  # white: flat spectrum
  assert abs(slopes[1] + 1.0) < 0.05  # pink: power ~ 1/f
  with pytest.raises(FileNotFoundError, match="_background_noise_"):
    data.load_background_noise(tmp_path, fallback=False)


def test_missing_explicit_data_root_is_an_error_not_the_fallback(tmp_path, monkeypatch, caplog):
  """A mistyped --data_root or $BILEVEL_JAX_DATA must not silently become generated noise."""
  with caplog.at_level(logging.WARNING, logger="bilevel_jax.data.noise"):
    with pytest.raises(FileNotFoundError, match="typo.*does not exist"):
      data.load_background_noise(tmp_path / "typo")
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "env_typo"))
    with pytest.raises(FileNotFoundError, match="env_typo.*does not exist"):
      data.load_background_noise()
  assert "FALLBACK" not in caplog.text
