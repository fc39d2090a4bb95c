"""Small audio files written by tests (the shared data folders are read-only)."""

from __future__ import annotations

import pathlib

import numpy as np
import soundfile as sf


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
  t = np.arange(int(round(seconds * rate))) / rate
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: pathlib.Path, x: np.ndarray, rate: int, subtype: str = "PCM_16") -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(str(path), x, rate, subtype=subtype)


def make_fsdd(
  root: pathlib.Path, takes=(0, 1, 5, 6), digits=(0, 1, 2), speakers=("alice", "bob")
) -> pathlib.Path:
  """Writes an FSDD-like folder root/fsdd/recordings of 8 kHz tones; returns root/fsdd."""
  rec = root / "fsdd" / "recordings"
  for d in digits:
    for s_i, s in enumerate(speakers):
      for t in takes:
        write_wav(
          rec / f"{d}_{s}_{t}.wav", tone(200 + 100 * d + 10 * s_i + t, 0.3 + 0.05 * t, 8000), 8000
        )
  return root / "fsdd"
