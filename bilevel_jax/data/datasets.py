"""`load_dataset`: one entry point for FSDD and Speech Commands V2 (cached 16 kHz waveforms)."""

from __future__ import annotations

import os
import pathlib

from bilevel_jax.data import core, fsdd, speech_commands
from bilevel_jax.utils import paths

DATASETS = ("fsdd", "speech_commands", "speech_commands_sample")


def _resolve_root(data_root, download: bool) -> pathlib.Path:
  try:
    return paths.resolve_data_root(data_root)
  except FileNotFoundError:
    if not download or data_root:
      raise
    return paths.cache_root() / "data"  # nowhere else to put a download


def load_dataset(
  name: str,
  data_root: str | os.PathLike | None = None,
  *,
  on_error: str = "raise",
  cache: bool = True,
  progress: bool = True,
  download: bool = False,
  url: str = fsdd.DEFAULT_URL,
  source: str = "folder",
) -> core.AudioDataset:
  """Loads a dataset as 1 s, 16 kHz, mono float32 waveforms (decoded once, then cached).

  Args:
    name: "fsdd", "speech_commands" (35 words, extracted V2 folder) or "speech_commands_sample"
      (the `speech_commands_v2_sample` folder under the data root; test split only).
    data_root: the data root (holding `fsdd/`, `speech_commands_v2/`...) or the dataset folder
      itself; default: $BILEVEL_JAX_DATA, else ../shared/data.
    on_error: "raise" (default): after one pass over all files, one error naming every bad
      file (unexpected name, unreadable/corrupt/truncated, NaN/Inf or far outside [-1, 1])
      with its reason; "skip" leaves them out and lists each once in `.skipped`.
    cache: read/write the waveform cache under `cache_root()/waveforms/`.
    progress: show a tqdm bar while decoding.
    download: FSDD only; fetch the public GitHub archive if no recordings are found.
    url: archive URL for `download` (https, http or file://).
    source: "folder", or "tfds" for tensorflow-datasets' 12-class speech_commands builder.

  Returns:
    AudioDataset with train/test (and validation for Speech Commands) `Split`s; waveforms
    (N, 16000) float32 (read-only memory maps when cached).
  """
  core.check_on_error(on_error)
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; expected one of {DATASETS}")
  if source == "tfds":
    if name != "speech_commands":
      raise ValueError(f"source='tfds' serves only 'speech_commands' (12 classes), not {name!r}")
    return speech_commands.load_tfds(
      None if data_root is None else str(data_root), download=download
    )
  if source != "folder":
    raise ValueError(f"source={source!r}; expected 'folder' or 'tfds'")
  if download and name != "fsdd":
    raise ValueError(
      f"download=True (--download) fetches FSDD only, not {name!r}; download and "
      "extract speech_commands_v0.02.tar.gz and pass its folder as data_root"
    )
  root = _resolve_root(data_root, download and name == "fsdd")
  problems: list[tuple[str, str]] = []
  if name == "fsdd":
    rec_dir = fsdd.find_recordings(root)
    if rec_dir is None and download:
      rec_dir = fsdd.download(root / "fsdd", url)
    if rec_dir is None:
      raise FileNotFoundError(
        f"No FSDD recordings under {root}: expected {root / 'fsdd' / 'recordings'} (or "
        f"{root / 'recordings'}) with {{digit}}_{{speaker}}_{{take}}.wav files; pass "
        "download=True (--download) to fetch them from GitHub"
      )
    ds_root = rec_dir.parent if rec_dir.name == "recordings" else rec_dir
    entries = fsdd.list_entries(ds_root, rec_dir, problems)
    return core.build_splits(
      name,
      fsdd.CLASS_NAMES,
      ds_root,
      entries,
      has_validation=False,
      on_error=on_error,
      problems=problems,
      cache=cache,
      progress=progress,
    )
  folders = (
    ("speech_commands_v2_sample",)
    if name == "speech_commands_sample"
    else speech_commands.FOLDER_NAMES
  )
  sc_root = speech_commands.find_root(root, folders)
  entries, missing = speech_commands.list_entries(sc_root, problems)
  return core.build_splits(
    name,
    speech_commands.WORDS,
    sc_root,
    entries,
    has_validation=True,
    on_error=on_error,
    problems=problems,
    missing_classes=missing,
    cache=cache,
    progress=progress,
  )
