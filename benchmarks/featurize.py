r"""Featurizing the FSDD training set with augmentation: JAX (jitted, from the cache) vs librosa.

  python -m benchmarks.featurize --out=benchmarks/results/featurize_cpu.json

JAX: the 2700 cached, memory-mapped training waveforms go through
`augment_and_featurize` (jitted once; compile time reported apart) in batches; the time is the
median over repeats of the whole set, host-to-device copy included.
librosa: the per-file loop a straightforward implementation would run: librosa.load (decode +
soxr_hq resample to 16 kHz), centred pad/crop, the same four augmentations in numpy (np.interp
for speed), librosa.feature.melspectrogram + power_to_db. Both in one run; ratio = librosa / JAX.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

import numpy as np
from absl import app, flags

_OUT = flags.DEFINE_string("out", None, "Result JSON path.", required=True)
_DATA_ROOT = flags.DEFINE_string("data_root", None, "Data root (default: the usual one).")
_BATCH = flags.DEFINE_integer("batch_size", 300, "JAX batch size (2700 = 9 x 300).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats of the JAX pass.")
_NUM_LIBROSA = flags.DEFINE_integer(
  "num_librosa", 0, "Clips in the librosa loop (0 = all; else per-clip scaled)."
)
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")


def librosa_augment_featurize(path, noise: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One clip the straightforward way; returns (32, 32) dB."""
  import librosa  # pylint: disable=import-outside-toplevel

  y, _ = librosa.load(path, sr=16000, res_type="soxr_hq")
  n = len(y)  # centred pad/crop to 16000 samples
  if n < 16000:
    y = np.pad(y, ((16000 - n) // 2, 16000 - n - (16000 - n) // 2))
  else:
    y = y[(n - 16000) // 2 : (n - 16000) // 2 + 16000]
  t = np.arange(16000, dtype=np.float64)
  flags_ = rng.random(4) < 0.5
  if flags_[1]:  # speed about the centre
    u = rng.uniform(0.8, 1.2)
    y = np.interp(8000 + u * (t - 8000), t, y, left=0.0, right=0.0).astype(np.float32)
  if flags_[2]:  # shift, zero fill
    s = int(rng.integers(-4000, 4001))
    y = np.roll(y, s)
    if s > 0:
      y[:s] = 0.0
    elif s < 0:
      y[s:] = 0.0
  if flags_[0]:
    y = y * rng.uniform(0.8, 1.2)
  if flags_[3]:
    k = int(rng.integers(noise.shape[0]))
    o = int(rng.integers(noise.shape[1] - 16000 + 1))
    seg = noise[k, o : o + 16000]
    snr = rng.uniform(0.0, 40.0)
    p_sig, p_noise = np.mean(y**2), np.mean(seg**2)
    if p_sig > 0:
      y = y + np.sqrt(p_sig / (p_noise * 10 ** (snr / 10))) * seg
  mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=2048, hop_length=512, n_mels=32)
  return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel
  import librosa  # pylint: disable=import-outside-toplevel

  from bilevel_jax import audio, data  # pylint: disable=import-outside-toplevel
  from bilevel_jax.utils import io  # pylint: disable=import-outside-toplevel

  ds = data.load_dataset("fsdd", _DATA_ROOT.value)  # builds the cache on a first run
  noise_np = data.load_background_noise(_DATA_ROOT.value)
  wav = ds.train.waveforms  # (2700, 16000), memory-mapped cache
  n, b = wav.shape[0], _BATCH.value
  if n % b:
    raise ValueError(f"--batch_size={b} must divide the {n} training clips")
  fn = jax.jit(audio.augment_and_featurize)
  noise = jax.device_put(noise_np)
  key = jax.random.key(_SEED.value)

  t0 = time.perf_counter()
  compiled = fn.lower(key, jax.ShapeDtypeStruct((b, 16000), np.float32), noise).compile()
  compile_s = time.perf_counter() - t0

  def jax_pass(pass_key):
    outs = [
      compiled(jax.random.fold_in(pass_key, i), jax.device_put(np.asarray(wav[i : i + b])), noise)
      for i in range(0, n, b)
    ]
    return jax.block_until_ready(outs)

  first = jax_pass(jax.random.fold_in(key, 10_000))  # warm-up (allocations, page cache)
  assert all(o.shape == (b, 32, 32, 1) for o in first)
  times = []
  for r in range(_REPEATS.value):
    t0 = time.perf_counter()
    jax_pass(jax.random.fold_in(key, r))
    times.append(time.perf_counter() - t0)
  jax_s = statistics.median(times)

  root = ds.root
  files = ds.train.files if not _NUM_LIBROSA.value else ds.train.files[: _NUM_LIBROSA.value]
  rng = np.random.default_rng(_SEED.value)
  librosa_augment_featurize(os.path.join(root, files[0]), noise_np, rng)  # warm-up imports
  t0 = time.perf_counter()
  for f in files:
    librosa_augment_featurize(os.path.join(root, f), noise_np, rng)
  librosa_measured_s = time.perf_counter() - t0
  librosa_s = librosa_measured_s * n / len(files)

  result = {
    "command": " ".join(["python -m benchmarks.featurize"] + sys.argv[1:]),
    "task": "augment + log-mel of the 2700 FSDD training clips",
    "num_clips": n,
    "batch_size": b,
    "jax_compile_s": compile_s,
    "jax_s_median": jax_s,
    "jax_s_all_repeats": times,
    "jax_clips_per_s": n / jax_s,
    "librosa_clips_timed": len(files),
    "librosa_measured_s": librosa_measured_s,
    "librosa_s_for_all_clips": librosa_s,
    "librosa_clips_per_s": n / librosa_s,
    "ratio_librosa_over_jax": librosa_s / jax_s,
    "machine": {
      "nproc": os.cpu_count(),
      "platform": platform.platform(),
      "processor": platform.processor(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jax_backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "librosa": librosa.__version__,
      "numpy": np.__version__,
      "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    },
  }
  io.atomic_write_json(_OUT.value, result)
  print(
    f"JAX ({jax.default_backend()}): compile {compile_s:.2f} s, {jax_s:.3f} s for {n} clips "
    f"({n / jax_s:.0f} clips/s); librosa loop: {librosa_s:.2f} s ({n / librosa_s:.0f} "
    f"clips/s); ratio {librosa_s / jax_s:.1f}x"
  )


if __name__ == "__main__":
  app.run(main)
