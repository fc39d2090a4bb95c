"""One progress mechanism for long runs: tqdm bars that share the terminal with logging.

While a bar is open, console log handlers (Python's `logging.StreamHandler`s on stdout/stderr
and absl's handler) write through `tqdm.write`, which clears the bars, prints the line and
redraws them, so a log line never lands glued to a bar. With progress disabled (e.g.
`--config.progress=False`, logs to a file) a `Progress` writes one log line per `log` call
instead of drawing a bar; nothing is reported both ways.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import Any, Iterator

_lock = threading.Lock()
_depth = 0
_patched: list[tuple[logging.StreamHandler, Any]] = []


class _TqdmStream:
  """A file-like object that writes through tqdm.write (bars cleared and redrawn)."""

  def __init__(self, stream: Any):
    self.stream = stream

  def write(self, text: str) -> None:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    if text:
      tqdm.write(text, file=self.stream, end="")

  def flush(self) -> None:
    self.stream.flush()


def _console_handlers() -> Iterator[logging.StreamHandler]:
  """Handlers of every existing logger that write to the console (absl's included)."""
  loggers = [logging.getLogger()] + [
    l for l in logging.root.manager.loggerDict.values() if isinstance(l, logging.Logger)
  ]
  seen = set()
  for handler in (h for l in loggers for h in l.handlers):
    inner = getattr(handler, "python_handler", None)  # absl's ABSLHandler wraps a StreamHandler
    for h in (handler, inner):
      if (
        isinstance(h, logging.StreamHandler)
        and h.stream in (sys.stdout, sys.stderr)
        and id(h) not in seen
      ):
        seen.add(id(h))
        yield h


@contextlib.contextmanager
def logging_through_bars() -> Iterator[None]:
  """Routes console logging through tqdm.write while active (re-entrant, thread-safe)."""
  global _depth
  with _lock:
    if _depth == 0:
      for h in _console_handlers():
        _patched.append((h, h.stream))
        h.stream = _TqdmStream(h.stream)
    _depth += 1
  try:
    yield
  finally:
    with _lock:
      _depth -= 1
      if _depth == 0:
        for h, stream in _patched:
          h.stream = stream
        _patched.clear()


class Progress:
  """A tqdm bar (enabled) or log lines (disabled) for `total` units of work.

  update(n, **postfix) advances the bar; `log(message)` is a log line when the bar is off and
  the bar's status text when it is on, so each event is reported once.
  """

  def __init__(
    self,
    total: int,
    *,
    initial: int = 0,
    desc: str = "",
    enabled: bool = True,
    leave: bool = True,
    logger: logging.Logger | None = None,
    file: Any = None,
  ):
    self._log = logger or logging.getLogger("bilevel_jax")
    self._desc = desc
    self._bar = None
    self._redirect = None
    if enabled:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top

      self._redirect = logging_through_bars()
      self._redirect.__enter__()
      self._bar = tqdm(
        total=total, initial=initial, desc=desc, leave=leave, file=file, dynamic_ncols=True
      )

  def update(self, n: int = 1, **postfix: Any) -> None:
    if self._bar is not None:
      if postfix:
        self._bar.set_postfix(postfix, refresh=False)
      self._bar.update(n)

  def log(self, message: str, *args: Any) -> None:
    if self._bar is None:
      self._log.info(f"{self._desc}: {message}" if self._desc else message, *args)
    else:
      self._bar.set_postfix_str(message % args if args else message)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    if self._redirect is not None:
      self._redirect.__exit__(None, None, None)
      self._redirect = None

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()
