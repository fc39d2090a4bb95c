"""Speech Commands V2 (35 words) from the extracted folder, and a tensorflow-datasets route.

Folder layout: `<word>/<speaker>_nohash_<n>.wav` for the 35 words, `_background_noise_/`
(never a class), `validation_list.txt` and `testing_list.txt` (paths relative to the root).
Validation and test splits are the files in those lists; train is every other clip. List
entries without a file are ignored, and missing word folders give a warning listing them, so a
partial copy works; the label space stays the 35 words (missing ones just have no clips). Folders
that are not one of the 35 words are bad input (reported with any bad files); missing split
lists are an error.

tensorflow-datasets: its `speech_commands` builder is the **12-class** variant (10 words +
`_silence_` + `_unknown_`), not the paper's 35-word task; `load_tfds` is offered for that task
only, needs `pip install tensorflow-datasets tensorflow` (extra `[tfds]`), and has no speaker ids.
"""

from __future__ import annotations

import logging
import pathlib
import re

import numpy as np

from bilevel_jax.data import core, decode

log = logging.getLogger(__name__)

NAME = "speech_commands"
WORDS = (
  "backward",
  "bed",
  "bird",
  "cat",
  "dog",
  "down",
  "eight",
  "five",
  "follow",
  "forward",
  "four",
  "go",
  "happy",
  "house",
  "learn",
  "left",
  "marvin",
  "nine",
  "no",
  "off",
  "on",
  "one",
  "right",
  "seven",
  "sheila",
  "six",
  "stop",
  "three",
  "tree",
  "two",
  "up",
  "visual",
  "wow",
  "yes",
  "zero",
)
FILE_RE = re.compile(r"^(.+)_nohash_(\d+)\.wav$")
SPLIT_LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
FOLDER_NAMES = ("speech_commands_v2", "speech_commands", "SpeechCommands")


def looks_like_root(path: pathlib.Path) -> bool:
  return path.is_dir() and any(
    (path / n).exists() for n in (*SPLIT_LISTS.values(), "_background_noise_")
  )


def find_root(data_root: pathlib.Path, folder_names=FOLDER_NAMES) -> pathlib.Path:
  """The extracted dataset folder: data_root itself or data_root/<one of folder_names>."""
  if looks_like_root(data_root):
    return data_root
  for name in folder_names:
    if looks_like_root(data_root / name):
      return data_root / name
  raise FileNotFoundError(
    f"No Speech Commands folder under {data_root}: expected {data_root} or one of "
    f"{[str(data_root / n) for n in folder_names]} to contain {list(SPLIT_LISTS.values())} "
    "and the 35 word folders (download and extract speech_commands_v0.02.tar.gz)"
  )


def read_split_list(path: pathlib.Path) -> set[str]:
  if not path.is_file():
    raise FileNotFoundError(
      f"Missing split list {path}; expected the official Speech Commands "
      f"V2 file {path.name} (one '<word>/<file>.wav' per line)"
    )
  return {line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()}


def list_entries(
  root: pathlib.Path, problems: list[tuple[str, str]]
) -> tuple[list[core.Entry], tuple[str, ...]]:
  """Lists the clips of the word folders with their split, label and speaker id.

  Returns (entries, words with no folder here). Unknown folders and unexpected file names are
  appended to `problems` as (relative path, reason).
  """
  lists = {s: read_split_list(root / f) for s, f in SPLIT_LISTS.items()}
  overlap = lists["validation"] & lists["test"]
  if overlap:
    raise ValueError(
      f"{len(overlap)} files are in both {root / SPLIT_LISTS['validation']} and "
      f"{root / SPLIT_LISTS['test']} (e.g. {sorted(overlap)[0]}); expected "
      "disjoint lists"
    )
  label_of = {w: i for i, w in enumerate(WORDS)}
  folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
  problems.extend(
    (
      p.name,
      f"unknown class folder; expected one of the 35 Speech Commands V2 "
      f"words {list(WORDS)} (or a folder starting with '_')",
    )
    for p in folders
    if p.name not in label_of
  )
  missing = tuple(w for w in WORDS if w not in {p.name for p in folders})
  if missing:
    log.warning(
      "%s: partial copy, %d of the %d words have no folder (%s); loading the other "
      "%d, the label space stays all %d words",
      root,
      len(missing),
      len(WORDS),
      ", ".join(missing),
      len(WORDS) - len(missing),
      len(WORDS),
    )
  entries = []
  for folder in folders:
    if folder.name not in label_of:
      continue
    for p in sorted(folder.iterdir()):
      if p.name.startswith("."):
        continue
      rel = f"{folder.name}/{p.name}"
      m = FILE_RE.match(p.name)
      if not p.is_file() or m is None:
        problems.append((rel, "unexpected entry; expected <speaker>_nohash_<n>.wav"))
        continue
      split = (
        "validation" if rel in lists["validation"] else "test" if rel in lists["test"] else "train"
      )
      entries.append(core.Entry(rel, split, label_of[folder.name], m.group(1)))
  present = {e.relpath for e in entries}
  for s, names in lists.items():
    absent = len(names - present)
    if absent:
      log.info(
        "%s: %d of %d entries have no file here (partial copy?)", SPLIT_LISTS[s], absent, len(names)
      )
  return entries, missing


def load_tfds(data_dir: str | None = None, *, download: bool = False) -> core.AudioDataset:
  """Speech Commands through tensorflow-datasets (12 classes, NOT the paper's 35 words).

  Clips are int16 at 16 kHz; they are scaled to [-1, 1) and centre padded/cropped to 1 s.
  Speaker ids are not provided by the builder (empty strings).
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
      "The tensorflow-datasets route needs `pip install tensorflow-datasets tensorflow` "
      "(extra [tfds]). Note that its `speech_commands` builder has 12 classes (10 words, "
      "_silence_, _unknown_), not the paper's 35 words: for the paper's task download "
      "speech_commands_v0.02 and use load_dataset('speech_commands', data_root=...)."
    ) from e
  builder = tfds.builder("speech_commands", data_dir=data_dir)
  if download:
    builder.download_and_prepare()
  class_names = tuple(builder.info.features["label"].names)
  splits = {}
  for split in ("train", "validation", "test"):
    wavs, labels = [], []
    for ex in tfds.as_numpy(builder.as_dataset(split=split)):
      wavs.append(decode.fix_length(ex["audio"].astype(np.float32) / 32768.0))
      labels.append(int(ex["label"]))
    n = len(wavs)
    splits[split] = core.Split(
      np.stack(wavs) if n else np.zeros((0, decode.TARGET_LENGTH), np.float32),
      np.asarray(labels, np.int32),
      np.full((n,), "", dtype=str),
      tuple(f"{split}/{i}" for i in range(n)),
    )
  return core.AudioDataset(
    "speech_commands_tfds12",
    class_names,
    splits["train"],
    splits["test"],
    splits["validation"],
    str(data_dir or ""),
  )
