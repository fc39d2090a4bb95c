"""Background noise for augmentation: Speech Commands' `_background_noise_` recordings.

The six official recordings (60-95 s, 16 kHz) are decoded, mixed to mono, resampled to 16 kHz
and cropped to the length of the shortest one so they stack into one (K, L) array (the paper
adds these to FSDD clips too). When no folder is found, a fallback is returned and a WARNING is
logged: two generated 60 s recordings, white noise and pink (1/f power) noise, from a fixed
seed. Pass `fallback=False` to get an error instead.
"""

from __future__ import annotations

import logging
import os
import pathlib

import numpy as np

from bilevel_jax.data import decode
from bilevel_jax.utils import paths

log = logging.getLogger(__name__)

NOISE_FOLDER = "_background_noise_"
OFFICIAL_FILES = (
  "doing_the_dishes.wav",
  "dude_miaowing.wav",
  "exercise_bike.wav",
  "pink_noise.wav",
  "running_tap.wav",
  "white_noise.wav",
)
FALLBACK_SECONDS = 60
_PARENTS = (
  "",
  "speech_commands_v2",
  "speech_commands",
  "SpeechCommands",
  "speech_commands_v2_sample",
)


def find_noise_dir(data_root: pathlib.Path) -> pathlib.Path | None:
  for parent in _PARENTS:
    cand = data_root / parent / NOISE_FOLDER if parent else data_root / NOISE_FOLDER
    if cand.is_dir():
      return cand
  if data_root.name == NOISE_FOLDER and data_root.is_dir():
    return data_root
  return None


def generated_noise(seconds: int = FALLBACK_SECONDS, seed: int = 0) -> np.ndarray:
  """White and pink noise, (2, seconds * 16000) float32, each with RMS 0.1."""
  n = seconds * decode.TARGET_RATE
  rng = np.random.default_rng(seed)
  white = rng.standard_normal(n)
  spec = np.fft.rfft(rng.standard_normal(n))
  freqs = np.fft.rfftfreq(n, 1.0 / decode.TARGET_RATE)
  spec[1:] /= np.sqrt(freqs[1:])  # power ~ 1/f
  spec[0] = 0.0
  pink = np.fft.irfft(spec, n)
  out = np.stack([white, pink])
  out *= 0.1 / np.sqrt(np.mean(out**2, axis=1, keepdims=True))
  return out.astype(np.float32)


def load_background_noise(
  data_root: str | os.PathLike | None = None,
  *,
  noise_dir: str | os.PathLike | None = None,
  fallback: bool = True,
) -> np.ndarray:
  """Returns the noise recordings as (K, L) float32 at 16 kHz (L >= 16000).

  Looks in `noise_dir`, else under the data root (flag > $BILEVEL_JAX_DATA > ../shared/data)
  for `_background_noise_` in the root, `speech_commands_v2/`, `speech_commands/` or
  `speech_commands_v2_sample/`. Bad files raise a BadAudioError naming the file; a data root
  given by flag or $BILEVEL_JAX_DATA that does not exist raises FileNotFoundError (the
  generated fallback is only for a root without a noise folder, or no data root at all).
  """
  folder = None
  looked = []
  if noise_dir is not None:
    folder = pathlib.Path(noise_dir)
    if not folder.is_dir():
      raise FileNotFoundError(
        f"noise_dir={folder} is not a folder; expected Speech Commands' "
        f"{NOISE_FOLDER} folder with .wav files"
      )
  else:
    try:
      root = paths.resolve_data_root(data_root)
      folder = find_noise_dir(root)
      looked = [str(root / p / NOISE_FOLDER) for p in _PARENTS]
    except FileNotFoundError as e:
      if data_root or os.environ.get(paths.DATA_ENV):
        raise  # a mistyped data root must not silently turn into generated noise
      looked = [str(e)]
  files = sorted(folder.glob("*.wav")) if folder is not None else []
  if not files:
    msg = (
      f"No background-noise wavs found (looked in {folder or looked}); expected Speech "
      f"Commands' {NOISE_FOLDER} folder with {list(OFFICIAL_FILES)}"
    )
    if not fallback:
      raise FileNotFoundError(msg)
    log.warning(
      "%s. FALLBACK: using generated white and pink noise (2 x %d s) instead.",
      msg,
      FALLBACK_SECONDS,
    )
    return generated_noise()
  for f in files:
    decode.probe(f)
  clips = [decode.load_mono_16k(f) for f in files]
  length = min(c.shape[0] for c in clips)
  if length < decode.TARGET_LENGTH:
    short = files[int(np.argmin([c.shape[0] for c in clips]))]
    raise decode.BadAudioError(
      f"{short}: noise recording shorter than 1 s; expected >= "
      f"{decode.TARGET_LENGTH} samples at 16 kHz"
    )
  names = [f.name for f in files]
  if sorted(names) != sorted(OFFICIAL_FILES):
    log.info("Background noise from %s: %s (not the 6 official files)", folder, names)
  return np.stack([c[:length] for c in clips])
