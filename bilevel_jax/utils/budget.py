"""Wall-clock budgets: `--time_budget=SECONDS` on the training entry points.

A run given a budget checks it between chunks of training steps; once it is spent the training
in progress saves an Orbax checkpoint and raises `TimeBudgetExceeded`, and the entry point exits
with status EXIT_TIME_BUDGET (75, EX_TEMPFAIL: "try again"), so a caller (e.g. a 10-minute
device call) can tell "stopped on time, resume me" (75) from "finished" (0) and "failed" (other).
"""

from __future__ import annotations

import time

EXIT_TIME_BUDGET = 75


class TimeBudgetExceeded(Exception):
  """Raised when a run's wall-clock budget is spent; the run's state has been saved."""


class Deadline:
  """A point in time (time.monotonic) after which runs stop; None-like when seconds is None."""

  def __init__(self, seconds: float | None, *, clock=time.monotonic):
    if seconds is not None and seconds < 0:
      raise ValueError(f"--time_budget={seconds}; expected seconds >= 0.")
    self._clock = clock
    self.seconds = seconds
    self._end = None if seconds is None else clock() + seconds

  def expired(self) -> bool:
    return self._end is not None and self._clock() >= self._end

  def remaining(self) -> float:
    return float("inf") if self._end is None else max(0.0, self._end - self._clock())


NO_DEADLINE = Deadline(None)
