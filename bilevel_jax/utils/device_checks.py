"""Value checks that reduce where the data lives and fetch a few scalars.

`tracing.concrete` copies a whole array to the host; for a pool on an accelerator that is a
sync plus a pool-sized transfer on every call. These helpers reduce a device array on the
device (one small jitted program per shape) and fetch only counts and first indices; NumPy
arrays are checked in place; traced values are skipped (checks then happen outside jit).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class NonFinite(NamedTuple):
  count: int  # NaN/inf entries
  first: tuple[int, ...]  # index of the first one (row-major); () when count == 0


class RowSums(NamedTuple):
  min_value: float  # smallest entry
  min_row: int  # its row
  bad_rows: int  # rows whose sum is off 1 by more than tol
  first_bad: int  # the first such row (0 when none)
  first_bad_sum: float  # its sum


def is_traced(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


@jax.jit
def _nonfinite(x):
  bad = jnp.logical_not(jnp.isfinite(x)).ravel()
  return jnp.sum(bad, dtype=jnp.int32), jnp.argmax(bad)


def nonfinite(x: Any) -> NonFinite | None:
  """NaN/inf entries of x, counted where x lives; None for a traced value."""
  if is_traced(x):
    return None
  if isinstance(x, jax.Array):
    if not jnp.issubdtype(x.dtype, jnp.inexact):
      return NonFinite(0, ())
    count, first = jax.device_get(_nonfinite(x))
  else:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.inexact):
      return NonFinite(0, ())
    bad = ~np.isfinite(a).ravel()
    count, first = int(bad.sum()), int(np.argmax(bad)) if bad.size else 0
  count = int(count)
  shape = np.shape(x)
  return NonFinite(
    count, tuple(int(i) for i in np.unravel_index(int(first), shape)) if count else ()
  )


@jax.jit
def _row_sums(y, tol):
  sums = jnp.sum(y, axis=1)
  bad = jnp.abs(sums - 1.0) > tol
  first = jnp.argmax(bad)
  row_min = jnp.min(y, axis=1)
  return (jnp.min(row_min), jnp.argmin(row_min), jnp.sum(bad, dtype=jnp.int32), first, sums[first])


def row_sums(y: Any, tol: float) -> RowSums | None:
  """Summary of how far the rows of y (R, c) are from distributions; None if traced."""
  if is_traced(y):
    return None
  if isinstance(y, jax.Array):
    out = jax.device_get(_row_sums(y, jnp.float32(tol)))
  else:
    y = np.asarray(y)
    sums = y.sum(axis=1)
    bad = np.abs(sums - 1.0) > tol
    row_min = y.min(axis=1)
    first = int(np.argmax(bad))
    out = (row_min.min(), np.argmin(row_min), bad.sum(), first, sums[first])
  return RowSums(float(out[0]), int(out[1]), int(out[2]), int(out[3]), float(out[4]))


@jax.jit
def _spread(x):
  x = x.reshape(x.shape[0], -1)
  return jnp.max(jnp.abs(x - x[:1]))


def rows_all_equal(x: Any) -> bool | None:
  """Whether every row of x (N, ...) equals the first (e.g. all-zero features); None if traced
  or empty."""
  if is_traced(x) or np.shape(x)[0] == 0:
    return None
  if isinstance(x, jax.Array):
    return bool(jax.device_get(_spread(x)) == 0)
  a = np.asarray(x).reshape(np.shape(x)[0], -1)
  return bool(np.all(a == a[:1]))
