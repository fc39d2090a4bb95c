"""Decoding: validate headers, decode (soundfile), mono, resample to 16 kHz (soxr), fix length.

Policy for odd inputs (documented, tested):
  - multi-channel files are mixed down to mono by averaging the channels;
  - any sample rate in [MIN_RATE, MAX_RATE] Hz is resampled to 16 kHz with soxr ("HQ");
    rates outside that range are rejected (no speech content / almost surely a broken header);
  - empty (0 bytes), non-audio, corrupt or truncated files (a WAV whose `data` chunk claims more
    bytes than the file holds), files with no samples, files with non-finite samples and files
    with samples far outside full scale (|x| > MAX_ABS_SAMPLE; float WAVs can hold any value)
    are rejected with a `BadAudioError` naming the file and what was expected.
Loading never stops at the first bad file: every problem of a dataset is collected and reported
in one error (or skipped, with on_error="skip"); see `core.build_splits`.
Pad/crop to exactly 1 s is centred: short clips get equal zero padding on both sides, long clips
keep their central second (the augmentations' speed change is centred the same way).
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import struct
from typing import NamedTuple, Sequence

import numpy as np
import soundfile as sf
import soxr
import tqdm

TARGET_RATE = 16000
TARGET_LENGTH = 16000
MIN_RATE = 4000
MAX_RATE = 192000
# Full scale is [-1, 1]; a float WAV a little over it is merely clipped speech, but an amplitude
# of 1e6 would dominate the cache and the features. Integer PCM always decodes within [-1, 1).
MAX_ABS_SAMPLE = 2.0
SKIP_HINT = (
  "rerun with --on_error=skip (on_error='skip' in Python) to leave them out; "
  "the skipped files are listed"
)


class BadAudioError(ValueError):
  """A source file that cannot be used; the message names the file and the expectation."""


class ClipInfo(NamedTuple):
  """A file's header: sample rate (Hz), frames (samples per channel) and channels."""

  path: pathlib.Path
  sample_rate: int
  frames: int
  channels: int

  @property
  def duration(self) -> float:
    """Seconds, before resampling and pad/crop."""
    return self.frames / self.sample_rate


def _check_wav_not_truncated(path: pathlib.Path) -> None:
  """Raises if a RIFF/WAVE file's `data` chunk claims more bytes than the file holds.

  libsndfile silently reads a truncated file as a shorter one, so we check the header.
  """
  size = path.stat().st_size
  with open(path, "rb") as f:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
      return
    pos = 12
    while pos + 8 <= size:
      f.seek(pos)
      chunk = f.read(8)
      if len(chunk) < 8:
        return
      cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
      if cid == b"data":
        if csize in (0, 0xFFFFFFFF):  # streaming writers leave the size unset
          return
        have = size - pos - 8
        if csize > have:
          raise BadAudioError(
            f"{path}: truncated WAV: the header declares {csize} bytes of audio data but the "
            f"file holds only {have}; expected a complete file (re-extract or re-download it)"
          )
        return
      pos += 8 + csize + (csize & 1)


def probe(path: str | os.PathLike) -> ClipInfo:
  """Reads and checks a file's header only (fast); raises BadAudioError on bad input."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise BadAudioError(f"{path}: missing or not a regular file; expected an audio file")
  if path.stat().st_size == 0:
    raise BadAudioError(f"{path}: empty file (0 bytes); expected a WAV/FLAC/OGG audio file")
  try:
    info = sf.info(str(path))
  except Exception as e:  # soundfile raises LibsndfileError / RuntimeError variants
    raise BadAudioError(
      f"{path}: not a readable audio file ({e}); expected a WAV/FLAC/OGG "
      "file that libsndfile can decode"
    ) from e
  if info.frames <= 0:
    raise BadAudioError(f"{path}: contains no samples; expected a non-empty clip")
  if info.channels < 1:
    raise BadAudioError(f"{path}: has {info.channels} channels; expected >= 1")
  if not MIN_RATE <= info.samplerate <= MAX_RATE:
    raise BadAudioError(
      f"{path}: sample rate {info.samplerate} Hz; expected a rate in "
      f"[{MIN_RATE}, {MAX_RATE}] Hz (resampled to {TARGET_RATE} Hz)"
    )
  _check_wav_not_truncated(path)
  return ClipInfo(path, int(info.samplerate), int(info.frames), int(info.channels))


def fix_length(x: np.ndarray, length: int = TARGET_LENGTH) -> np.ndarray:
  """Centred zero-pad or centred crop of a 1-D signal to `length` samples."""
  n = x.shape[0]
  if n >= length:
    start = (n - length) // 2
    return x[start : start + length]
  left = (length - n) // 2
  return np.pad(x, (left, length - n - left))


def load_mono_16k(path: str | os.PathLike) -> np.ndarray:
  """Decodes one file to mono float32 at 16 kHz (original length). Raises BadAudioError."""
  try:
    x, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
  except Exception as e:
    raise BadAudioError(f"{path}: decoding failed ({e}); expected a readable audio file") from e
  if x.shape[0] == 0:
    raise BadAudioError(f"{path}: contains no samples; expected a non-empty clip")
  x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
  if not np.all(np.isfinite(x)):
    raise BadAudioError(f"{path}: contains NaN or infinite samples; expected finite audio")
  peak = float(np.max(np.abs(x)))
  if peak > MAX_ABS_SAMPLE:
    raise BadAudioError(
      f"{path}: peak amplitude {peak:.3g}; expected samples in [-1, 1] (full "
      f"scale; up to {MAX_ABS_SAMPLE:g} is tolerated)"
    )
  if rate != TARGET_RATE:
    x = soxr.resample(x, rate, TARGET_RATE, quality="HQ").astype(np.float32)
  return np.ascontiguousarray(x, dtype=np.float32)


def load_clip(path: str | os.PathLike) -> np.ndarray:
  """Decodes one file to exactly (16000,) float32 mono at 16 kHz."""
  return fix_length(load_mono_16k(path))


LISTING_LIMIT = 100


def problem_listing(lines: Sequence[str], limit: int = LISTING_LIMIT) -> str:
  """The first `limit` lines of an error listing, indented, plus how many were left out."""
  more = (
    f"\n  ... and {len(lines) - limit} more (--on_error=skip lists them all)"
    if len(lines) > limit
    else ""
  )
  return "\n  " + "\n  ".join(lines[:limit]) + more


def validate_files(
  paths: Sequence[pathlib.Path], root: pathlib.Path, progress: bool = False
) -> tuple[list[ClipInfo], list[tuple[str, str]]]:
  """Probes every file's header (fast, no decoding); never stops at a bad one.

  Returns the good files' ClipInfos (in order) and [(path relative to root, reason)].
  """
  infos, problems = [], []
  for p in tqdm.tqdm(paths, desc="validating", unit="file", disable=not progress, mininterval=1.0):
    try:
      infos.append(probe(p))
    except BadAudioError as e:
      problems.append((pathlib.Path(p).relative_to(root).as_posix(), str(e)))
  return infos, problems


def decode_into(
  out: np.ndarray,
  paths: Sequence[pathlib.Path],
  *,
  desc: str,
  progress: bool = True,
  num_threads: int | None = None,
) -> list[tuple[int, str]]:
  """Decodes paths[i] into out[i] (N, 16000) with a thread pool and a progress bar.

  Never stops at a bad file: returns [(i, reason)] for every file that failed to decode
  (its row is zeroed), so that one pass finds them all.
  """
  num_threads = num_threads or min(8, os.cpu_count() or 1)
  failures: list[tuple[int, str]] = []

  def work(i: int) -> tuple[int, str | None]:
    try:
      out[i] = load_clip(paths[i])
      return i, None
    except BadAudioError as e:
      out[i] = 0.0
      return i, str(e)

  with (
    tqdm.tqdm(total=len(paths), desc=desc, unit="clip", disable=not progress) as bar,
    concurrent.futures.ThreadPoolExecutor(num_threads) as pool,
  ):
    for i, reason in pool.map(work, range(len(paths))):
      if reason is not None:
        failures.append((i, reason))
      bar.update(1)
  return failures
