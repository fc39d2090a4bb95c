r"""Accuracy of the float32 JAX log-mel on real clips, against librosa in float64.

  python -m benchmarks.log_mel_accuracy --out=benchmarks/results/log_mel_accuracy.json

Every clip of the Speech Commands V2 sample (563, all 35 words) and every FSDD clip goes
through `audio.log_mel` in float32 (jitted, as in training) and through librosa's
melspectrogram + power_to_db in float64 (the reference; same STFT, Slaney mel bands and dB
floor). Reported: max |difference| in dB over the bins whose reference level is above a
threshold (absolute dB, and dB below the clip's loudest bin), and where the largest one is.
librosa's own float32 pipeline is measured the same way for comparison (its STFT multiplies
the frames by a float64 window, so its FFT runs in float64 before the cast to complex64).
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
from absl import app, flags

_OUT = flags.DEFINE_string("out", None, "Result JSON path.", required=True)
_DATA_ROOT = flags.DEFINE_string("data_root", None, "Data root (default: the usual one).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Clips per JAX call.")

ABS_THRESHOLDS_DB = (-40.0, -60.0, -70.0, -80.0, -90.0, -100.0)
REL_THRESHOLDS_DB = (-40.0, -60.0, -80.0, -100.0)


def librosa_log_mel(y: np.ndarray, dtype) -> np.ndarray:
  """(16000,) -> (32, 32) dB with librosa, computed in `dtype`."""
  import librosa  # pylint: disable=import-outside-toplevel

  mel = librosa.feature.melspectrogram(
    y=y.astype(dtype),
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


def error_table(got: np.ndarray, ref: np.ndarray, files: list[str]) -> dict:
  """Max |got - ref| (dB) over bins above each threshold; got, ref: (N, 32, 32)."""
  diff = np.abs(got.astype(np.float64) - ref)
  rel = ref - ref.max(axis=(1, 2), keepdims=True)
  i = np.unravel_index(np.argmax(np.where(ref > -80.0, diff, -1.0)), diff.shape)
  return {
    "max_abs_diff_db_above_abs_level": {
      f"{t:g}": float(diff[ref > t].max()) for t in ABS_THRESHOLDS_DB
    },
    "max_abs_diff_db_within_rel_level_of_clip_peak": {
      f"{t:g}": float(diff[rel > t].max()) for t in REL_THRESHOLDS_DB
    },
    "max_abs_diff_db_all_bins": float(diff.max()),
    "worst_bin_above_-80_db": {
      "file": files[i[0]],
      "mel_band": int(i[1]),
      "frame": int(i[2]),
      "diff_db": float(diff[i]),
      "reference_db": float(ref[i]),
      "below_clip_peak_db": float(-rel[i]),
    },
  }


def measure(clips: np.ndarray, files: list[str], batch: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from bilevel_jax import audio  # pylint: disable=import-outside-toplevel

  log_mel = jax.jit(audio.log_mel)
  got = np.concatenate(
    [
      np.asarray(log_mel(jnp.asarray(clips[i : i + batch], jnp.float32)))
      for i in range(0, len(clips), batch)
    ]
  )
  ref = np.stack([librosa_log_mel(y, np.float64) for y in clips])
  lib32 = np.stack([librosa_log_mel(y, np.float32) for y in clips])
  return {
    "num_clips": len(files),
    "jax_float32_vs_librosa_float64": error_table(got, ref, files),
    "librosa_float32_vs_librosa_float64": error_table(lib32, ref, files),
  }


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel
  import librosa  # pylint: disable=import-outside-toplevel

  from bilevel_jax import data  # pylint: disable=import-outside-toplevel
  from bilevel_jax.utils import io, paths  # pylint: disable=import-outside-toplevel

  root = paths.resolve_data_root(_DATA_ROOT.value)
  out = {
    "command": " ".join(["python -m benchmarks.log_mel_accuracy"] + sys.argv[1:]),
    "versions": {"jax": jax.__version__, "librosa": librosa.__version__, "numpy": np.__version__},
    "platform": jax.devices()[0].platform,
    "datasets": {},
  }
  sc = data.load_dataset("speech_commands_sample", root, progress=False).test
  fsdd = data.load_dataset("fsdd", root, progress=False)
  fsdd_files = list(fsdd.train.files) + list(fsdd.test.files)
  fsdd_wav = np.concatenate([np.asarray(fsdd.train.waveforms), np.asarray(fsdd.test.waveforms)])
  for name, clips, files in (
    ("speech_commands_v2_sample", np.asarray(sc.waveforms), list(sc.files)),
    ("fsdd", fsdd_wav, fsdd_files),
  ):
    out["datasets"][name] = measure(clips, files, _BATCH.value)
    print(name, json.dumps(out["datasets"][name]["jax_float32_vs_librosa_float64"], indent=1))
  path = pathlib.Path(_OUT.value)
  io.atomic_write_json(path, out)
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
