"""Dataset types and the per-dataset waveform cache (host side, numpy).

A dataset is listed as `Entry`s (relative path, split, label, speaker) plus the problems found
while listing (unexpected names); `build_splits` validates every file's header, then decodes all
clips once into one (N, 16000) float32 .npy under
`cache_root()/waveforms/`, memory-mapped on later loads. The cache key hashes the dataset name,
the decoding parameters, `on_error` and every source file's relative path, size and mtime, so
any change to the files or the parameters rebuilds it. The array is written to a temporary
file and renamed into place (atomic); the JSON metadata is written after it, atomically too.

Bad input is collected in one pass (listing, headers, then samples: NaN/Inf, far outside
[-1, 1]) and reported together: with on_error="raise" one `BadAudioError` names every bad file
with its reason once the pass is over (nothing is cached); with "skip" they are left out and
listed once each in `AudioDataset.skipped`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
from typing import NamedTuple, Sequence

import numpy as np

from bilevel_jax.data import decode
from bilevel_jax.utils import io, paths

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SPLIT_ORDER = ("train", "validation", "test")
ON_ERROR = ("raise", "skip")


class Split(NamedTuple):
  """One split, host-side numpy. waveforms may be a read-only memory map."""

  waveforms: np.ndarray  # (N, 16000) float32, 16 kHz, exactly 1 s
  labels: np.ndarray  # (N,) int32 in [0, num_classes)
  speakers: np.ndarray  # (N,) str speaker ids
  files: tuple[str, ...]  # source paths relative to the dataset root
  durations: np.ndarray | None = None  # (N,) float64 seconds, before pad/crop


class AudioDataset(NamedTuple):
  """A dataset's splits; labels index `class_names`; `root` is the dataset folder."""

  name: str
  class_names: tuple[str, ...]
  train: Split
  test: Split
  validation: Split | None
  root: str = ""
  skipped: tuple[tuple[str, str], ...] = ()  # (relative path, reason), on_error="skip" only
  missing_classes: tuple[str, ...] = ()  # classes with no folder here (a partial copy)


class Entry(NamedTuple):
  relpath: str  # relative to the dataset root, forward slashes
  split: str  # one of SPLIT_ORDER
  label: int
  speaker: str


def check_on_error(on_error: str) -> None:
  if on_error not in ON_ERROR:
    raise ValueError(f"on_error={on_error!r}; expected one of {ON_ERROR}")


def unique_problems(problems: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
  """One (path, reason) per path, sorted by path; distinct reasons for one path are joined."""
  by_path: dict[str, list[str]] = {}
  for path, reason in problems:
    reasons = by_path.setdefault(path, [])
    if reason not in reasons:
      reasons.append(reason)
  return [(p, "; ".join(by_path[p])) for p in sorted(by_path)]


def raise_if_bad(
  name: str, root: pathlib.Path, problems: Sequence[tuple[str, str]], on_error: str
) -> None:
  """With on_error="raise", one error listing every bad file (absolute path: reason)."""
  if not problems or on_error != "raise":
    return
  lines = []
  for rel, reason in problems:
    path = str(root / rel)
    lines.append(reason if reason.startswith(path) else f"{path}: {reason}")
  raise decode.BadAudioError(
    f"{name}: {len(problems)} bad file(s) under {root} ({decode.SKIP_HINT}):"
    f"{decode.problem_listing(lines)}"
  )


def fingerprint(name: str, root: pathlib.Path, entries: Sequence[Entry], params: dict) -> str:
  """Cache key: sha256 of name, parameters and every entry's path, split, label, size, mtime."""
  h = hashlib.sha256()
  h.update(json.dumps({"name": name, "version": CACHE_VERSION, **params}, sort_keys=True).encode())
  for e in entries:
    st = (root / e.relpath).stat()
    h.update(
      f"\n{e.relpath}\t{e.split}\t{e.label}\t{e.speaker}\t{st.st_size}\t{st.st_mtime_ns}".encode()
    )
  return h.hexdigest()


def _cache_paths(name: str, key: str) -> tuple[pathlib.Path, pathlib.Path]:
  folder = paths.cache_root() / "waveforms"
  stem = f"{name}-{key[:24]}"
  return folder / f"{stem}.npy", folder / f"{stem}.json"


def _assemble(name, class_names, root, array, meta, missing_classes) -> AudioDataset:
  splits = {}
  for split in SPLIT_ORDER:
    rows = np.asarray(meta["rows"][split], np.int64)
    if split == "validation" and not meta["has_validation"]:
      splits[split] = None
      continue
    contiguous = rows.size == 0 or np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size))
    start = int(rows[0]) if rows.size else 0
    wav = array[start : start + rows.size] if contiguous else np.asarray(array[rows])
    splits[split] = Split(
      waveforms=wav,
      labels=np.asarray(meta["labels"], np.int32)[rows],
      speakers=np.asarray(meta["speakers"], dtype=str)[rows] if rows.size else np.zeros((0,), str),
      files=tuple(meta["files"][i] for i in rows),
      durations=np.asarray(meta["durations"], np.float64)[rows],
    )
  return AudioDataset(
    name,
    tuple(class_names),
    splits["train"],
    splits["test"],
    splits["validation"],
    str(root),
    tuple(tuple(s) for s in meta["skipped"]),
    tuple(missing_classes),
  )


def build_splits(
  name: str,
  class_names: Sequence[str],
  root: pathlib.Path,
  entries: Sequence[Entry],
  *,
  has_validation: bool,
  on_error: str,
  problems: Sequence[tuple[str, str]] = (),
  missing_classes: Sequence[str] = (),
  cache: bool = True,
  progress: bool = True,
) -> AudioDataset:
  """Validates, decodes (or loads from cache) and splits `entries` of the dataset at `root`.

  `problems` are (relative path, reason) pairs found while listing (e.g. unexpected names);
  they are reported together with the header and sample problems found here.
  """
  check_on_error(on_error)
  order = {s: i for i, s in enumerate(SPLIT_ORDER)}
  entries = sorted(entries, key=lambda e: (order[e.split], e.relpath))
  listing = unique_problems(problems)
  params = {
    "rate": decode.TARGET_RATE,
    "length": decode.TARGET_LENGTH,
    "fix_length": "centre",
    "resampler": "soxr-HQ",
    "mono": "mean",
    "max_abs_sample": decode.MAX_ABS_SAMPLE,
    "on_error": on_error,
    "skipped_listing": [list(p) for p in listing],
  }
  key = fingerprint(name, root, entries, params)
  npy_path, meta_path = _cache_paths(name, key)
  if cache and npy_path.is_file() and meta_path.is_file():
    log.info("Loading cached %s waveforms from %s", name, npy_path)
    return _assemble(
      name,
      class_names,
      root,
      np.load(npy_path, mmap_mode="r"),
      io.read_json(meta_path),
      missing_classes,
    )

  # 1. Every header (fast), then 2. every clip's samples; bad files are collected, never raised
  #    on one by one, so that one error (or one skip list) names them all.
  log.info("%s: validating %d files under %s", name, len(entries), root)
  infos, header_problems = decode.validate_files(
    [root / e.relpath for e in entries], root, progress=progress and len(entries) > 10000
  )
  found = unique_problems([*listing, *header_problems])
  if found and on_error == "raise":
    log.warning(
      "%s: %d bad file(s) so far; decoding the others too, so that one error lists every bad file",
      name,
      len(found),
    )
  bad = {p for p, _ in header_problems}
  entries = [e for e in entries if e.relpath not in bad]
  durations = [i.duration for i in infos]
  if not entries:
    log.warning("%s: no usable clips under %s", name, root)

  # Decode once, streaming into a memory-mapped temporary file (the full Speech Commands
  # array is ~6.7 GB, so it is never held in memory), then rename it into place; an error
  # inside the block removes the temporary file.
  shape = (len(entries), decode.TARGET_LENGTH)
  files = [root / e.relpath for e in entries]

  def decode_all(array: np.ndarray) -> tuple[list[tuple[int, str]], list[tuple[str, str]]]:
    failures = decode.decode_into(array, files, desc=f"decoding {name}", progress=progress)
    found_all = unique_problems([*found, *((entries[i].relpath, r) for i, r in failures)])
    raise_if_bad(name, root, found_all, on_error)
    return failures, found_all

  if cache:
    with io.atomic_path(npy_path, suffix=".tmp.npy") as tmp:
      array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
      failures, skipped = decode_all(array)
      array.flush()
      del array
  else:
    array = np.zeros(shape, np.float32)
    failures, skipped = decode_all(array)

  failed = {i for i, _ in failures}
  rows = {
    s: [i for i, e in enumerate(entries) if e.split == s and i not in failed] for s in SPLIT_ORDER
  }
  meta = {
    "name": name,
    "root": str(root),
    "key": key,
    "params": params,
    "has_validation": has_validation,
    "rows": rows,
    "files": [e.relpath for e in entries],
    "labels": [e.label for e in entries],
    "speakers": [e.speaker for e in entries],
    "durations": durations,
    "skipped": [list(p) for p in skipped],
  }
  if skipped:
    log.warning(
      "%s: skipped %d bad file(s) (on_error=skip):\n  %s",
      name,
      len(skipped),
      "\n  ".join(f"{p}: {r}" for p, r in skipped),
    )
  if cache:
    io.atomic_write_json(meta_path, meta)
    array = np.load(npy_path, mmap_mode="r")
    log.info("%s: cached %d clips in %s", name, len(entries), npy_path)
  return _assemble(name, class_names, root, array, meta, missing_classes)
