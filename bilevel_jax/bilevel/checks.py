"""Input checks of the greedy bilevel selection (`select.select_batch`): shapes, dtypes, label
rows, labeled indices, settings (`settings.SelectionSettings`, all checked by `check_settings`). Value checks run on concrete inputs only and reduce device
arrays where they live (no pool-sized host copies); traced inputs get shape checks.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel.settings import SelectionSettings
from bilevel_jax.utils import device_checks
from bilevel_jax.utils import tracing

SOLVERS = ("paper", "exact")


class SelectionInputs(NamedTuple):
  """The data of one greedy selection, in `select.select_batch`'s argument order (shapes there).

  pool_z (P, m), pseudo_labels (P, c), labeled_idx (L,), labeled_labels (L,), labeled_bank
  (L, A, m), bank_fn (static: `bank_fn(bank_params, key, index) -> (A, m)`), bank_params (a
  pytree of arrays).
  """

  pool_z: Any
  pseudo_labels: Any
  labeled_idx: Any
  labeled_labels: Any
  labeled_bank: Any
  bank_fn: Callable[..., Any]
  bank_params: Any


def _check_finite(name: str, x) -> None:
  # Reduced where x lives: a device-resident pool is not copied to the host.
  bad = device_checks.nonfinite(x)
  if bad is not None and bad.count:
    raise ValueError(
      f"{name} has {bad.count} NaN/inf entries (first at index "
      f"{list(bad.first)}); expected finite values."
    )


def check_label_rows(name: str, y: np.ndarray, tol: float = 1e-3, row_offset: int = 0) -> None:
  """Raises ValueError unless every row of y (R, c) is a distribution (>= 0, sums to 1 +- tol).

  row_offset: index of y's first row in the whole array (for chunks of a streamed pool).
  """
  if np.any(y < 0):
    row = int(np.argwhere(y < 0)[0, 0])
    raise ValueError(
      f"{name} must be probability distributions; row {row + row_offset} has a "
      f"negative entry {y[row].min():.3g}."
    )
  sums = y.sum(axis=1)
  bad = np.abs(sums - 1.0) > tol
  if np.any(bad):
    row = int(np.argmax(bad))
    raise ValueError(
      f"{name} rows must sum to 1 (tol {tol}); {int(bad.sum())} rows do not, "
      f"e.g. row {row + row_offset} sums to {sums[row]:.6g}."
    )


def _check_label_rows_on_device(name: str, y, tol: float) -> None:
  """check_label_rows for a device array: reduced on the device, a few scalars fetched."""
  r = device_checks.row_sums(y, tol)
  if r is None:
    return
  if r.min_value < 0:
    raise ValueError(
      f"{name} must be probability distributions; row {r.min_row} has a "
      f"negative entry {r.min_value:.3g}."
    )
  if r.bad_rows:
    raise ValueError(
      f"{name} rows must sum to 1 (tol {tol}); {r.bad_rows} rows do not, "
      f"e.g. row {r.first_bad} sums to {r.first_bad_sum:.6g}."
    )


def check_labeled(labeled_idx, labeled_labels, p: int, c: int) -> None:
  """Raises ValueError unless labeled_idx (L,) are distinct in [0, p) and labeled_labels (L,)
  lie in [0, c) (value checks on concrete inputs only)."""
  idx = tracing.concrete(labeled_idx)
  if idx is not None:
    if np.any(idx < 0) or np.any(idx >= p):
      raise ValueError(f"labeled_idx must lie in [0, P={p}), got min {idx.min()} max {idx.max()}.")
    uniq, counts = np.unique(idx, return_counts=True)
    if np.any(counts > 1):
      raise ValueError(f"labeled_idx has duplicates: {uniq[counts > 1].tolist()}.")
  lab = tracing.concrete(labeled_labels)
  if lab is not None and (np.any(lab < 0) or np.any(lab >= c)):
    raise ValueError(f"labeled_labels must lie in [0, c={c}), got min {lab.min()} max {lab.max()}.")


def check_settings(b, settings: SelectionSettings) -> None:
  """Raises ValueError naming a bad batch size `b` or selection setting (types and ranges; see
  `select.select_batch`). Traced float settings are checked where concrete."""
  s = settings
  if not isinstance(b, (int, np.integer)) or b < 1:
    raise ValueError(f"b must be a positive int, got {b!r}.")
  if s.solver not in SOLVERS:
    raise ValueError(f"solver must be one of {SOLVERS}, got {s.solver!r}.")
  inner.check_reduction(s.loss_reduction)
  if not 0.0 <= s.uniform_fraction <= 1.0:
    raise ValueError(f"uniform_fraction must be in [0, 1], got {s.uniform_fraction}.")
  for name, low in (
    ("inner_steps", 0),
    ("cg_steps", 1),
    ("inner_max_iter", 1),
    ("ihvp_max_iter", 1),
    ("newton_cg_max_iter", 1),
  ):
    value = getattr(s, name)
    if not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
  if s.batch_size is not None and (
    not isinstance(s.batch_size, (int, np.integer)) or s.batch_size < 1
  ):
    raise ValueError(
      f"batch_size must be a positive int or None (full batch), got {s.batch_size!r}."
    )
  for name, ok, want in (
    ("lr", lambda v: v > 0, "> 0"),
    ("l2", lambda v: v >= 0, ">= 0"),
    ("inner_tol", lambda v: v >= 0, ">= 0"),
    ("ihvp_rtol", lambda v: v >= 0, ">= 0"),
  ):
    value = getattr(s, name)
    v = tracing.concrete(value)
    if v is not None and (v.shape != () or not np.isfinite(v) or not ok(v)):
      raise ValueError(f"{name} must be a finite scalar {want}, got {value!r}.")


def validate_inputs(
  inputs: SelectionInputs,
  *,
  b,
  settings: SelectionSettings,
  w0=None,
  label_tol=1e-3,
  inner_solver=None,
  pool_valid=None,
) -> None:
  """Raises ValueError naming the argument and the expectation; see `select.select_batch`."""
  pool_z, pseudo_labels, labeled_idx, labeled_labels, labeled_bank, bank_fn, bank_params = inputs
  check_settings(b, settings)
  if settings.solver == "exact" and inner_solver is not None:
    raise ValueError(
      "inner_solver replaces the paper solver's Adam; it cannot be combined with solver='exact'."
    )
  if np.ndim(pool_z) != 2:
    raise ValueError(f"pool_z must be (P, m), got shape {np.shape(pool_z)}.")
  for name, value in (
    ("pool_z", pool_z),
    ("pseudo_labels", pseudo_labels),
    ("labeled_bank", labeled_bank),
  ) + ((("w0", w0),) if w0 is not None else ()):
    # An integer pool would otherwise fail deep inside the compiled loop (scan carry types).
    dtype = value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype  # no copy
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"{name} must be floating point, got dtype {dtype}.")
  p, m = np.shape(pool_z)
  if np.ndim(pseudo_labels) != 2 or np.shape(pseudo_labels)[0] != p:
    raise ValueError(f"pseudo_labels must be (P={p}, c), got shape {np.shape(pseudo_labels)}.")
  c = np.shape(pseudo_labels)[1]
  if c < 2:
    raise ValueError(f"pseudo_labels need at least 2 classes, got c={c}.")
  if np.ndim(labeled_idx) != 1 or np.shape(labeled_idx)[0] < 1:
    raise ValueError(f"labeled_idx must be (L,) with L >= 1, got shape {np.shape(labeled_idx)}.")
  n_lab = np.shape(labeled_idx)[0]
  if np.shape(labeled_labels) != (n_lab,):
    raise ValueError(f"labeled_labels must be (L={n_lab},), got shape {np.shape(labeled_labels)}.")
  if (
    np.ndim(labeled_bank) != 3
    or np.shape(labeled_bank)[0] != n_lab
    or np.shape(labeled_bank)[2] != m
  ):
    raise ValueError(
      f"labeled_bank must be (L={n_lab}, A, m={m}), got shape {np.shape(labeled_bank)}."
    )
  n_aug = np.shape(labeled_bank)[1]
  if n_aug < 1:
    raise ValueError("labeled_bank needs at least one augmented copy per point (A >= 1).")
  for name, value in (("labeled_idx", labeled_idx), ("labeled_labels", labeled_labels)):
    if not jnp.issubdtype(jnp.asarray(value).dtype, jnp.integer):
      raise ValueError(f"{name} must be integers, got dtype {jnp.asarray(value).dtype}.")
  if b > p - n_lab:
    raise ValueError(
      f"b={b} is larger than the {p - n_lab} pool points available (P={p} minus L={n_lab} labeled)."
    )
  if w0 is not None and np.shape(w0) != (m, c):
    raise ValueError(f"w0 must be (m={m}, c={c}), got shape {np.shape(w0)}.")
  if inner_solver is not None and not callable(inner_solver):
    raise ValueError(f"inner_solver must be None or a callable solver, got {inner_solver!r}.")
  _check_finite("pool_z", pool_z)
  _check_finite("labeled_bank", labeled_bank)
  _check_finite("pseudo_labels", pseudo_labels)
  if w0 is not None:
    _check_finite("w0", w0)  # a NaN start gives NaN scores, and argmax then picks by index
  if isinstance(pseudo_labels, np.ndarray):
    check_label_rows("pseudo_labels", pseudo_labels, label_tol)
  else:
    _check_label_rows_on_device("pseudo_labels", pseudo_labels, label_tol)
  check_labeled(labeled_idx, labeled_labels, p, c)
  if pool_valid is not None:
    if np.shape(pool_valid) != (p,):
      raise ValueError(f"pool_valid must be (P={p},) bool, got shape {np.shape(pool_valid)}.")
    if not jnp.issubdtype(jnp.asarray(pool_valid).dtype, jnp.bool_):
      raise ValueError(f"pool_valid must be bool, got dtype {jnp.asarray(pool_valid).dtype}.")
    idx = tracing.concrete(labeled_idx)  # (L,): small
    if not device_checks.is_traced(pool_valid) and idx is not None:
      # Reduced where the mask lives: a count and the L labeled entries reach the host.
      lab_valid = np.asarray(jnp.asarray(pool_valid)[jnp.asarray(idx)])
      num_valid = int(jnp.sum(jnp.asarray(pool_valid)))
      if not np.all(lab_valid):
        raise ValueError(
          f"labeled_idx {idx[~lab_valid].tolist()} are marked invalid in "
          "pool_valid; labeled points must be valid pool rows."
        )
      if b > num_valid - n_lab:
        raise ValueError(
          f"b={b} is larger than the {num_valid - n_lab} valid pool points "
          f"available ({num_valid} valid in pool_valid minus L={n_lab})."
        )

  out = jax.eval_shape(bank_fn, bank_params, jax.random.key(0), jnp.zeros((), jnp.int32))
  if tuple(out.shape) != (n_aug, m):
    raise ValueError(
      f"bank_fn(bank_params, key, index) must return (A={n_aug}, m={m}) like "
      f"labeled_bank, got {tuple(out.shape)}."
    )
