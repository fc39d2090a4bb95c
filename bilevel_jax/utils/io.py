"""Atomic file writes (a killed process never leaves a half-written result; unique temporary
names, data and folder fsynced) and an exclusive file lock for cache entries that several
processes may fill."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pathlib
import tempfile
import warnings
from typing import Any, Iterator

import numpy as np

_log = logging.getLogger(__name__)


def _to_jsonable(obj: Any) -> Any:
  if isinstance(obj, dict):
    return {str(k): _to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray) or hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
    return _to_jsonable(np.asarray(obj).tolist())
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, pathlib.Path):
    return str(obj)
  return obj


def process_umask() -> int:
  """The process umask, read without changing it.

  os.umask(0) followed by a reset would briefly give files other threads create in between
  mode 0666, so Linux's /proc/self/status (Umask:) is read instead; elsewhere the mode of a
  probe file created with 0666 tells the umask.
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  fd, probe = tempfile.mkstemp(prefix=".umask-probe-")
  os.close(fd)
  os.unlink(probe)
  fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    return 0o666 & ~os.fstat(fd).st_mode & 0o777
  finally:
    os.close(fd)
    os.unlink(probe)


def default_file_mode() -> int:
  """0o666 minus the process umask: what open() would give a new file."""
  return 0o666 & ~process_umask()


def fsync_file(path: str | os.PathLike) -> None:
  """Flushes a file's data to disk (also data written through another descriptor)."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
  """Flushes a folder's entries (a rename or a new file in it) to disk, where supported."""
  try:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
  except OSError:  # e.g. Windows cannot open folders
    return
  try:
    os.fsync(fd)
  except OSError:  # some file systems refuse fsync on folders
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
  """Yields a unique temporary file name next to `path`; renames it onto `path` if the block
  succeeds.

  The name comes from mkstemp in the target folder, so two processes writing the same `path`
  never share a temporary file (the last rename wins, each file complete). Before the rename
  the data is fsynced, after it the folder, so a power loss leaves either the old or the new
  file. The temporary file gets the permissions a plainly created file would have (mkstemp's
  0600 would make results unreadable to other users of a shared checkout); on any exception,
  KeyboardInterrupt included, it is removed and `path` is left untouched.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
  os.close(fd)
  try:
    os.chmod(tmp, default_file_mode())
    yield tmp
    fsync_file(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


def jsonable(obj: Any) -> Any:
  """`obj` with numpy/jax arrays and scalars, tuples and paths turned into JSON types."""
  return _to_jsonable(obj)


def _first_non_finite(obj: Any, where: str) -> str | None:
  if isinstance(obj, float):
    return None if math.isfinite(obj) else f"{where} = {obj}"
  items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
  for k, v in items:
    found = _first_non_finite(v, f"{where}[{k!r}]")
    if found:
      return found
  return None


def nonfinite_to_null(obj: Any) -> Any:
  """`obj` (JSON types) with every NaN/inf float replaced by None (JSON null)."""
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: nonfinite_to_null(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [nonfinite_to_null(v) for v in obj]
  return obj


def check_finite_json(obj: Any, name: str) -> None:
  """Raises ValueError naming the first NaN/inf in `obj` (JSON has no such numbers: Python
  would write a bare NaN that other readers reject)."""
  found = _first_non_finite(_to_jsonable(obj), "")
  if found:
    raise ValueError(
      f"Refusing to write {name}: {found.lstrip()} is not a finite number, and "
      "JSON cannot hold NaN or inf."
    )


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` (numpy/jax arrays allowed) as indented JSON, atomically.

  Raises ValueError naming the entry if `obj` holds NaN or inf (not valid JSON).
  """
  obj = _to_jsonable(obj)
  check_finite_json(obj, str(path))
  text = json.dumps(obj, indent=1, sort_keys=False, allow_nan=False)
  atomic_write_bytes(path, (text + "\n").encode())


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
  """Saves one array as .npy atomically (readable with np.load(mmap_mode='r'))."""
  with atomic_path(path, suffix=".tmp.npy") as tmp:
    np.save(tmp, np.asarray(array))


def atomic_savez(
  path: str | os.PathLike, *, compressed: bool = False, **arrays: np.ndarray
) -> None:
  """np.savez(_compressed) of `arrays` to `path` (.npz) atomically, under a unique temp name."""
  with atomic_path(path, suffix=".tmp.npz") as tmp:
    (np.savez_compressed if compressed else np.savez)(tmp, **arrays)


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> pathlib.Path:
  """fig.savefig to `path` atomically; the format follows `path`'s suffix."""
  path = pathlib.Path(path)
  with atomic_path(path, suffix=path.suffix) as tmp:
    fig.savefig(tmp, **kwargs)
  return path


def read_json(path: str | os.PathLike) -> Any:
  with open(path) as f:
    return json.load(f)


@contextlib.contextmanager
def exclusive_lock(path: pathlib.Path, what: str) -> Iterator[None]:
  """Blocks until this process holds an exclusive flock on `path` (while it fills `what`).

  Where no lock can be had (no fcntl; a lock file that cannot be created, e.g. a read-only
  cache; a file system refusing flock, e.g. NFS without a lock daemon: ENOLCK) the block runs
  unlocked, with a warning for the last two: only two processes filling the same entry at the
  same moment can then clash.
  """
  try:
    import fcntl  # pylint: disable=g-import-not-at-top
  except ImportError:  # not POSIX: no cross-process exclusion
    yield
    return
  f = None
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+b")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # say why this process may sit still for a long time
      _log.info("Waiting for another process to finish %s.", what)
      fcntl.flock(f, fcntl.LOCK_EX)
  except OSError as e:
    if f is not None:
      f.close()
      f = None
    warnings.warn(
      f"No lock on {path} ({e}); filling {what} without it.", RuntimeWarning, stacklevel=3
    )
  try:
    yield
  finally:
    if f is not None:
      fcntl.flock(f, fcntl.LOCK_UN)
      f.close()
