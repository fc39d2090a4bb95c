"""Free Spoken Digit Dataset: `recordings/{digit}_{speaker}_{take}.wav`, 8 kHz mono.

Official split (the paper's): takes 0-4 -> test (300 clips), takes 5-49 -> train (2700 clips).
Labels are the digits 0-9; speaker ids are the names in the file names.
Opt-in download (`download=True`) fetches the public GitHub archive of
Jakobovski/free-spoken-digit-dataset and extracts only `recordings/*.wav`.
"""

from __future__ import annotations

import logging
import pathlib
import re
import shutil
import tempfile
import urllib.request
import zipfile

from bilevel_jax.data import core

log = logging.getLogger(__name__)

NAME = "fsdd"
CLASS_NAMES = tuple(str(d) for d in range(10))
NUM_TEST_TAKES = 5
FILE_RE = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")
DEFAULT_URL = (
  "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip"
)


def find_recordings(root: pathlib.Path) -> pathlib.Path | None:
  """The folder holding the wavs: root/fsdd/recordings, root/recordings, or root itself."""
  for cand in (root / "fsdd" / "recordings", root / "recordings", root / "fsdd", root):
    if cand.is_dir() and any(p.suffix == ".wav" for p in cand.iterdir()):
      return cand
  return None


def list_entries(
  dataset_root: pathlib.Path, rec_dir: pathlib.Path, problems: list[tuple[str, str]]
) -> list[core.Entry]:
  """Parses file names into entries relative to `dataset_root`.

  Unexpected names are appended to `problems` as (relative path, reason), reported later with
  any bad audio (`core.build_splits`).
  """
  entries = []
  for p in sorted(rec_dir.iterdir()):
    if p.name.startswith("."):
      continue
    m = FILE_RE.match(p.name)
    if not p.is_file() or m is None:
      problems.append(
        (
          p.relative_to(dataset_root).as_posix(),
          "unexpected entry; expected files named {digit}_{speaker}_{take}.wav, "
          "e.g. 3_jackson_12.wav",
        )
      )
      continue
    digit, speaker, take = int(m.group(1)), m.group(2), int(m.group(3))
    split = "test" if take < NUM_TEST_TAKES else "train"
    entries.append(core.Entry(p.relative_to(dataset_root).as_posix(), split, digit, speaker))
  return entries


def download(dest: pathlib.Path, url: str = DEFAULT_URL, timeout: float = 60.0) -> pathlib.Path:
  """Downloads the FSDD zip archive from `url` (https, http or file://) into dest/recordings.

  Only members `*/recordings/*.wav` are extracted (no path traversal possible); the folder is
  filled in a temporary directory and renamed into place. Returns dest/recordings.
  """
  target = dest / "recordings"
  if target.is_dir() and any(target.glob("*.wav")):
    log.info("FSDD already present at %s; not downloading", target)
    return target
  dest.mkdir(parents=True, exist_ok=True)
  log.warning("Downloading FSDD from %s to %s", url, dest)
  with tempfile.TemporaryDirectory(dir=dest) as tmp:
    archive = pathlib.Path(tmp) / "fsdd.zip"
    try:
      with urllib.request.urlopen(url, timeout=timeout) as r, open(archive, "wb") as f:
        shutil.copyfileobj(r, f)
    except Exception as e:
      raise OSError(
        f"FSDD download from {url} failed ({e}); expected a reachable zip archive "
        "of Jakobovski/free-spoken-digit-dataset"
      ) from e
    if not zipfile.is_zipfile(archive):
      raise ValueError(
        f"FSDD download from {url} is not a zip archive; expected the GitHub "
        "archive of Jakobovski/free-spoken-digit-dataset"
      )
    staging = pathlib.Path(tmp) / "recordings"
    staging.mkdir()
    count = 0
    with zipfile.ZipFile(archive) as z:
      for info in z.infolist():
        parts = pathlib.PurePosixPath(info.filename).parts
        if (
          len(parts) >= 2
          and parts[-2] == "recordings"
          and FILE_RE.match(parts[-1])
          and not info.is_dir()
        ):
          with z.open(info) as src, open(staging / parts[-1], "wb") as dst:
            shutil.copyfileobj(src, dst)
          count += 1
    if count == 0:
      raise ValueError(
        f"FSDD archive from {url} holds no recordings/*.wav files; expected "
        "the GitHub archive of Jakobovski/free-spoken-digit-dataset"
      )
    if target.exists():
      shutil.rmtree(target)
    staging.rename(target)
  log.warning("Downloaded %d FSDD recordings to %s", count, target)
  return target
