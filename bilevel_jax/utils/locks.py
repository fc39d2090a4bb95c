"""An exclusive, non-blocking lock on a run's working directory.

Two runs writing into one workdir would run every selection twice, duplicate metric rows and
let the last writer win, so a run holds `<workdir>/.lock` (a POSIX flock, released by the
kernel when the process dies, also on SIGKILL) from start to end. The holder writes its pid,
host, start time and command into the file, and a second run fails at once with
`WorkdirBusyError` naming them. Within one process the lock is re-entrant (the CLI holds it
around `al.loop.run`, which takes it too).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import socket
import sys
import threading
from typing import Iterator

LOCK_NAME = ".lock"

_held: dict[str, int] = {}  # resolved lock path -> nesting depth in this process
_held_guard = threading.Lock()


class WorkdirBusyError(RuntimeError):
  """Another process holds the working directory's lock."""


def holder_info(path: str | os.PathLike) -> dict:
  """What the current holder wrote into the lock file ({} if nothing readable)."""
  try:
    return json.loads(pathlib.Path(path).read_text() or "{}")
  except (OSError, ValueError):
    return {}


def _describe(info: dict) -> str:
  if not info:
    return "a process that has not written its details yet"
  return (
    f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started "
    f"{info.get('started_utc', '?')} ({info.get('command', '?')})"
  )


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike, command: str | None = None) -> Iterator[pathlib.Path]:
  """Holds an exclusive lock on `workdir` for the block; yields the lock file's path.

  Raises:
    WorkdirBusyError: another process holds it (the message names pid, host, start, command).
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / LOCK_NAME
  key = str(path.resolve())
  with _held_guard:
    if _held.get(key):
      _held[key] += 1
      nested = True
    else:
      nested = False
  if nested:
    try:
      yield path
    finally:
      with _held_guard:
        _held[key] -= 1
    return
  try:
    import fcntl  # pylint: disable=g-import-not-at-top
  except ImportError:  # not POSIX: nothing to lock with
    yield path
    return
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusyError(
        f"{workdir} is in use by another run: {_describe(holder_info(path))}. Wait for it to "
        f"finish or use another --workdir (lock file {path})."
      ) from None
    info = {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": command or " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    os.fsync(fd)
    with _held_guard:
      _held[key] = 1
    try:
      yield path
    finally:
      with _held_guard:
        _held.pop(key, None)
      os.ftruncate(fd, 0)  # the next reader must not name a finished run as the holder
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)
