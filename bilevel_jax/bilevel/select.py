"""Greedy bilevel batch selection (paper Algorithm 1), one jitted program per call.

Per greedy step k (lax.fori_loop over a selection mask):
  1. the inner problem F over the bank (labeled copies + copies of the k points picked so far),
     warm-started from step k-1: solver="paper" runs fixed-step minibatch Adam (`inner.py`;
     `inner_solver` swaps in another solver), solver="exact" Newton-CG to a gradient tolerance
     (`exact.py`);
  2. v = H^-1 grad G with closed-form Hessian-vector products (`inner.bank_hvp_t`): "paper" by
     a fixed number of CG steps (`ihvp.cg_solve`), "exact" by Kronecker-preconditioned CG to a
     relative residual; G, grad G and the pool probabilities from one pass (`outer.py`);
  3. scores of the whole pool, argmax over points neither labeled nor picked;
  4. the picked point's augmented copies, `bank_fn(bank_params, key, index) -> (A, m)`, fill
     the next free slot of the fixed-capacity bank.
Then round(uniform_fraction * b) more points are drawn uniformly from the rest (paper: 10%).

Shapes are static (bank capacity L + n_bilevel) and lr / l2 / the exact mode's tolerances are
traced, so repeated calls with the same shapes, settings of the static options and `bank_fn`
object reuse one compilation. F and G follow `loss_reduction` ("sum": the paper's Eq. 3, or
"mean"; see inner.py and outer.py).

Augmented copies (`bank_fn`). The bank function is static (hashed by identity) and its arrays
come in through the traced `bank_params` pytree rather than a closure: closed-over arrays would
be baked into the program as constants, and a fresh closure each round would recompile.
  * Precomputed copies: `precomputed_bank(pool_bank)` with pool_bank (P, A, m).
  * Copies made on the host when a point is picked (kernel code jitted on its own, disk
    cache): `HostBank(host_fn, A, m)`, a jax.pure_callback inside the program.
  * NTK copies computed inside the jit: a module-level function such as
      def ntk_bank_fn(params, key, i):          # params: waveforms (P, 16000), noise, landmarks,
        keys = jax.random.split(key, A)         #   landmark variance maps, Nystrom map (m, m)
        x = jax.vmap(lambda k: augment_and_featurize(k, params.waveforms[i][None], params.noise)[0])(keys)
        return nystrom_map(ntk(x, params.landmarks), params.nystrom)   # (A, m)
    with the bilevel_jax.audio / bilevel_jax.ntk functions; pass it with its params
    (`bilevel_jax.ntk.features.make_bank_fn` is such a function).

vmap over seeds: the keys are the only batched argument, e.g.
  jax.vmap(lambda k: select_batch(k, pool_z, ...))(jax.random.split(key, S))
gives the same picks as S separate calls. Value checks run on concrete (non-traced) inputs;
traced inputs get shape checks only.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from bilevel_jax.bilevel import exact
from bilevel_jax.bilevel import ihvp
from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import outer
from bilevel_jax.utils import device_checks
from bilevel_jax.utils import tracing

BankFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


class Selection(NamedTuple):
  """Result of `select_batch` (n = n_bilevel = b - round(uniform_fraction * b)).

  indices: (b,) int32 pool indices: the n greedy picks in order, then the uniform ones.
  is_bilevel: (b,) bool, True for greedy picks.
  scores: (n,) score of each greedy pick when it was chosen.
  inner_loss: (n,) F(w) after each inner solve, over the bank the pick was scored with.
  outer_loss: (n,) G(w) after each inner solve.
  cg_residual: (n,) relative inverse-HVP residual ||H v - grad G|| / ||grad G|| per step.
  w: (m, c) inner weights of the last inner solve.
  inner_grad_norm: (n,) ||grad F(w)|| (full bank) after each inner solve.
  inner_iterations: (n,) Adam steps or Newton steps of each inner solve.
  ihvp_iterations: (n,) CG iterations of each inverse-HVP.
  """

  indices: jax.Array
  is_bilevel: jax.Array
  scores: jax.Array
  inner_loss: jax.Array
  outer_loss: jax.Array
  cg_residual: jax.Array
  w: jax.Array
  inner_grad_norm: jax.Array | None = None
  inner_iterations: jax.Array | None = None
  ihvp_iterations: jax.Array | None = None


SOLVERS = ("paper", "exact")


def _take_bank(pool_bank: jax.Array, key: jax.Array, index: jax.Array) -> jax.Array:
  del key  # the copies were drawn in advance
  return pool_bank[index]


def precomputed_bank(pool_bank: jax.Array) -> tuple[BankFn, jax.Array]:
  """(bank_fn, bank_params) that look copies up in pool_bank: (P, A, m)."""
  if np.ndim(pool_bank) != 3:
    raise ValueError(f"pool_bank must have shape (P, A, m), got {np.shape(pool_bank)}.")
  return _take_bank, jnp.asarray(pool_bank)


class HostBank:
  """bank_fn that computes copies on the host (jax.pure_callback), e.g. with a kernel function
  that is jitted on its own or a cache on disk.

  `host_fn(index: int, key_data: np.ndarray uint32) -> (A, m)` array. Create one HostBank per
  experiment and reuse it: select_batch compiles once per bank_fn object. Use it with
  bank_params=None. Works under vmap (the callback then runs once per batch member).
  """

  def __init__(
    self, host_fn: Callable[[int, np.ndarray], np.ndarray], n_aug: int, m: int, dtype=jnp.float32
  ):
    self.host_fn = host_fn
    self.shape = jax.ShapeDtypeStruct((n_aug, m), dtype)

  def _call_host(self, index, key_data):
    out = np.asarray(self.host_fn(int(index), np.asarray(key_data)), self.shape.dtype)
    if out.shape != self.shape.shape:
      raise ValueError(f"HostBank host_fn returned shape {out.shape}, expected {self.shape.shape}.")
    return out

  def __call__(self, params, key, index):
    del params
    return jax.pure_callback(
      self._call_host, self.shape, index, jax.random.key_data(key), vmap_method="sequential"
    )


def split_batch(b: int, uniform_fraction: float) -> tuple[int, int]:
  """(n_bilevel, n_uniform) with n_uniform = round(uniform_fraction * b) (Python round)."""
  n_uniform = int(round(uniform_fraction * b))
  return b - n_uniform, n_uniform


def uniform_picks(key: jax.Array, available: jax.Array, n_uniform: int, dtype) -> jax.Array:
  """n_uniform distinct indices drawn uniformly at random among the True entries of
  `available` (P,) bool (the caller guarantees enough). Returns (n_uniform,) int32."""
  u = jnp.where(available, jax.random.uniform(key, available.shape, dtype), -1.0)
  return lax.top_k(u, n_uniform)[1].astype(jnp.int32)


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


def check_exact_settings(
  *, solver, loss_reduction, inner_tol, ihvp_rtol, inner_max_iter, ihvp_max_iter, newton_cg_max_iter
) -> None:
  """Raises ValueError naming a bad solver / convention setting (see `select_batch`)."""
  if solver not in SOLVERS:
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
  inner.check_reduction(loss_reduction)
  for name, value in (
    ("inner_max_iter", inner_max_iter),
    ("ihvp_max_iter", ihvp_max_iter),
    ("newton_cg_max_iter", newton_cg_max_iter),
  ):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
  for name, value in (("inner_tol", inner_tol), ("ihvp_rtol", ihvp_rtol)):
    v = tracing.concrete(value)
    if v is not None and (v.shape != () or not np.isfinite(v) or v < 0):
      raise ValueError(f"{name} must be a finite scalar >= 0, got {value!r}.")


def check_settings(*, b, uniform_fraction, lr, l2, inner_steps, batch_size, cg_steps) -> None:
  """Raises ValueError naming a bad selection setting (types and ranges; see `select_batch`)."""
  if not isinstance(b, (int, np.integer)) or b < 1:
    raise ValueError(f"b must be a positive int, got {b!r}.")
  if not 0.0 <= uniform_fraction <= 1.0:
    raise ValueError(f"uniform_fraction must be in [0, 1], got {uniform_fraction}.")
  for name, value, low in (("inner_steps", inner_steps, 0), ("cg_steps", cg_steps, 1)):
    if not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
  if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
    raise ValueError(f"batch_size must be a positive int or None (full batch), got {batch_size!r}.")
  for name, value, ok, want in (
    ("lr", lr, lambda v: v > 0, "> 0"),
    ("l2", l2, lambda v: v >= 0, ">= 0"),
  ):
    v = tracing.concrete(value)
    if v is not None and (v.shape != () or not np.isfinite(v) or not ok(v)):
      raise ValueError(f"{name} must be a finite scalar {want}, got {value!r}.")


def validate_inputs(
  pool_z,
  pseudo_labels,
  labeled_idx,
  labeled_labels,
  labeled_bank,
  bank_fn,
  bank_params,
  *,
  b,
  uniform_fraction,
  lr,
  l2,
  inner_steps,
  batch_size,
  cg_steps,
  w0=None,
  label_tol=1e-3,
  inner_solver=None,
  pool_valid=None,
  solver="paper",
  loss_reduction="mean",
  inner_tol=1e-6,
  ihvp_rtol=1e-4,
  inner_max_iter=50,
  ihvp_max_iter=1000,
  newton_cg_max_iter=200,
) -> None:
  """Raises ValueError naming the argument and the expectation; see `select_batch`."""
  check_exact_settings(
    solver=solver,
    loss_reduction=loss_reduction,
    inner_tol=inner_tol,
    ihvp_rtol=ihvp_rtol,
    inner_max_iter=inner_max_iter,
    ihvp_max_iter=ihvp_max_iter,
    newton_cg_max_iter=newton_cg_max_iter,
  )
  if solver == "exact" and inner_solver is not None:
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
  check_settings(
    b=b,
    uniform_fraction=uniform_fraction,
    lr=lr,
    l2=l2,
    inner_steps=inner_steps,
    batch_size=batch_size,
    cg_steps=cg_steps,
  )
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


@functools.partial(
  jax.jit,
  static_argnames=(
    "bank_fn",
    "n_bilevel",
    "n_uniform",
    "inner_steps",
    "batch_size",
    "cg_steps",
    "inner_solver",
    "solver",
    "reduction",
    "inner_max_iter",
    "ihvp_max_iter",
    "newton_cg_max_iter",
  ),
)
def _select(
  key,
  pool_z,
  pseudo_labels,
  labeled_idx,
  labeled_labels,
  labeled_bank,
  bank_params,
  lr,
  l2,
  w0,
  pool_valid,
  inner_tol,
  ihvp_rtol,
  *,
  bank_fn,
  n_bilevel,
  n_uniform,
  inner_steps,
  batch_size,
  cg_steps,
  inner_solver,
  solver,
  reduction,
  inner_max_iter,
  ihvp_max_iter,
  newton_cg_max_iter,
):
  p, m = pool_z.shape
  c = pseudo_labels.shape[1]
  n_lab, n_aug, _ = labeled_bank.shape
  dtype = pool_z.dtype
  inner_key, bank_key, uniform_key = jax.random.split(key, 3)

  onehot = jax.nn.one_hot(labeled_labels, c, dtype=dtype)  # (L, c)
  targets = pseudo_labels.at[labeled_idx].set(onehot)  # (P, c) for G
  available = jnp.ones((p,), bool) if pool_valid is None else pool_valid
  available = available.at[labeled_idx].set(False)
  cap = n_lab + n_bilevel
  bank = inner.Bank(
    z=jnp.zeros((cap, n_aug, m), dtype).at[:n_lab].set(labeled_bank.astype(dtype)),
    y=jnp.zeros((cap, c), dtype).at[:n_lab].set(onehot),
    valid=jnp.arange(cap) < n_lab,
  )

  def greedy_step(k, carry):
    state, v_prev, bank, available, picks, diag = carry
    if solver == "exact":
      red = exact.reduce_bank(bank, reduction)  # once per greedy step (bank is fixed)
      # Newton is warm-started from the previous step's w. (Starting from w0 instead took ~40%
      # fewer CG iterations on the anchor problem but swapped two picks of a float32 reference
      # case; the warm start with rotated coordinates is 0.78x the paper settings' time there.)
      newton = exact.newton_solve(
        exact.to_reduced(state.w.T, red),
        red,
        l2,
        tol=inner_tol,
        max_iter=inner_max_iter,
        cg_max_iter=newton_cg_max_iter,
      )
      state = inner.InnerState(exact.to_full(newton.wr, red).T, state.opt_state)
      inner_iters = newton.iterations
    else:
      kwargs = {} if reduction == "mean" else {"reduction": reduction}
      state, _ = inner_solver(
        jax.random.fold_in(inner_key, k),
        state,
        bank,
        lr,
        l2,
        steps=inner_steps,
        batch_size=batch_size,
        **kwargs,
      )
      inner_iters = inner_steps
    # The loop works on transposed (c, m) weights: see inner.xent_grad_t for why.
    wt = state.w.T
    g_val, g_grad_t, probs = outer.outer_value_grad_t(wt, pool_z, targets, pool_valid, reduction)
    hvp = inner.bank_hvp_t(wt, bank, l2, reduction)
    if solver == "exact":
      cg = exact.inverse_hvp(
        newton.wr, red, l2, g_grad_t, v_prev, rtol=ihvp_rtol, max_iter=ihvp_max_iter
      )
      # The recorded residual is the true one of the full system (one full-bank HVP).
      full_r = hvp(cg.x) - g_grad_t
      cg = cg._replace(
        residual=jnp.sqrt(
          jnp.sum(full_r * full_r)
          / jnp.maximum(jnp.sum(g_grad_t * g_grad_t), jnp.finfo(dtype).tiny)
        )
      )
      cg_iters = cg.iterations
    else:
      cg = ihvp.cg_solve(hvp, g_grad_t, steps=cg_steps)
      cg_iters = cg_steps
    scores = outer.pool_scores_t(probs, cg.x, pool_z, pseudo_labels)  # (P,)
    masked = jnp.where(available, scores, -jnp.inf)
    i = jnp.argmax(masked)
    # F of the inner problem this pick was scored with (before the pick joins the bank).
    f_val, f_grad = inner.bank_grad_t(wt, bank, l2, reduction)
    copies = bank_fn(bank_params, jax.random.fold_in(bank_key, k), i).astype(dtype)  # (A, m)
    bank = inner.Bank(
      bank.z.at[n_lab + k].set(copies),
      bank.y.at[n_lab + k].set(pseudo_labels[i]),
      bank.valid.at[n_lab + k].set(True),
    )
    row = jnp.stack(
      [
        masked[i],
        f_val,
        g_val,
        cg.residual,
        jnp.sqrt(jnp.sum(f_grad * f_grad)),
        jnp.asarray(inner_iters, dtype),
        jnp.asarray(cg_iters, dtype),
      ]
    )
    return (
      state,
      cg.x,
      bank,
      available.at[i].set(False),
      picks.at[k].set(i.astype(jnp.int32)),
      diag.at[k].set(row),
    )

  carry = (
    inner.init_inner_state(w0.astype(dtype)),
    jnp.zeros((c, m), dtype),
    bank,
    available,
    jnp.zeros((n_bilevel,), jnp.int32),
    jnp.zeros((n_bilevel, 7), dtype),
  )
  state, _, _, available, picks, diag = lax.fori_loop(0, n_bilevel, greedy_step, carry)

  if n_uniform:
    picks = jnp.concatenate([picks, uniform_picks(uniform_key, available, n_uniform, dtype)])
  is_bilevel = jnp.arange(n_bilevel + n_uniform) < n_bilevel
  return Selection(
    picks,
    is_bilevel,
    diag[:, 0],
    diag[:, 1],
    diag[:, 2],
    diag[:, 3],
    state.w,
    diag[:, 4],
    diag[:, 5].astype(jnp.int32),
    diag[:, 6].astype(jnp.int32),
  )


def select_batch(
  key: jax.Array,
  pool_z: jax.Array,
  pseudo_labels: jax.Array,
  labeled_idx: jax.Array,
  labeled_labels: jax.Array,
  labeled_bank: jax.Array,
  bank_fn: BankFn,
  bank_params: Any,
  *,
  b: int,
  uniform_fraction: float = 0.1,
  lr: float | jax.Array = 1e-3,
  l2: float | jax.Array = 1e-4,
  inner_steps: int = 1000,
  batch_size: int | None = 64,
  cg_steps: int = 30,
  w0: jax.Array | None = None,
  validate: bool = True,
  inner_solver: inner.InnerSolver | None = None,
  pool_valid: jax.Array | None = None,
  solver: str = "paper",
  loss_reduction: str = "sum",
  inner_tol: float | jax.Array = 1e-6,
  ihvp_rtol: float | jax.Array = 1e-4,
  inner_max_iter: int = 50,
  ihvp_max_iter: int = 1000,
  newton_cg_max_iter: int = 200,
) -> Selection:
  """Selects a batch of b pool points by the bilevel greedy rule (+ a uniform share).

  Args:
    key: PRNG key (minibatches, augmented copies, uniform share).
    pool_z: (P, m) clean Nystrom features of the whole training pool (labeled points included).
    pseudo_labels: (P, c) soft pseudo-labels (rows are distributions).
    labeled_idx: (L,) distinct pool indices of the labeled points, L >= 1.
    labeled_labels: (L,) their true classes in [0, c).
    labeled_bank: (L, A, m) features of A augmented copies of each labeled point.
    bank_fn: static `bank_fn(bank_params, key, index) -> (A, m)` copies of a picked point.
    bank_params: pytree of arrays used by bank_fn (traced).
    b: batch size; n_uniform = round(uniform_fraction * b) of it is uniform (b=10 -> 9 + 1).
    uniform_fraction: share drawn uniformly at random after the greedy picks (static).
    lr: Adam learning rate of the inner solver (traced; the paper does not state it, 1e-3 is
      the authors' published code).
    l2: lambda of the inner penalty l2 * ||w||^2 (traced), added to the data term of
      `loss_reduction`; the authors' code penalizes l2 / 2 * ||w||^2 (torch weight_decay) and
      fits a bias too (see docs/fidelity.md).
    inner_steps, batch_size: Adam steps per greedy step and pairs per minibatch (static);
      batch_size=None uses exact full-bank gradients.
    cg_steps: CG iterations for H^-1 grad G (static).
    w0: (m, c) initial inner weights, zeros by default (Algorithm 1 starts from a random w;
      the inner problem is strongly convex, so only the finite-step iterates depend on it).
    validate: run `validate_inputs` first (shapes on the host; finiteness and label rows of
      device arrays reduced on the device, only a few scalars fetched), and afterwards check
      that every greedy score is finite (`check_scores`: one host sync of the (n,) scores;
      skipped under an outer jit/vmap).
    inner_solver: static `solver(key, state, bank, lr, l2, *, steps, batch_size[, reduction])
      -> (InnerState, losses)` replacing the Adam of solver="paper" (`reduction` is passed
      unless it is "mean"); None (default) is `inner.fit_inner_steps`. `inner.LBFGSSolver(k)`
      runs k warm-started full-bank L-BFGS iterations (no tolerance: not necessarily the
      minimiser; solver="exact" solves to a tolerance).
    pool_valid: optional (P,) bool; False rows (e.g. padding of a sharded pool) are never
      scored, picked or drawn uniformly, and are left out of G.
    solver: "paper" (fixed-step Adam with lr / inner_steps / batch_size, cg_steps fixed CG
      steps) or "exact" (`exact.py`: Newton-CG to ||grad F|| <= inner_tol * ||grad F(0)||,
      at most inner_max_iter Newton steps of at most newton_cg_max_iter CG iterations each,
      warm-started; then preconditioned CG to residual ihvp_rtol, at most ihvp_max_iter
      iterations). Static; the tolerances are traced.
    loss_reduction: "sum" (the paper's Eq. 3: F sums over bank points the mean CE over their A
      copies, G sums over the pool) or "mean" (the project's first convention: F averages over
      the (point, copy) pairs, G over the pool). Static.

  Returns:
    Selection (indices (b,) and per-step diagnostics).
  """
  if validate:
    validate_inputs(
      pool_z,
      pseudo_labels,
      labeled_idx,
      labeled_labels,
      labeled_bank,
      bank_fn,
      bank_params,
      b=b,
      uniform_fraction=uniform_fraction,
      lr=lr,
      l2=l2,
      inner_steps=inner_steps,
      batch_size=batch_size,
      cg_steps=cg_steps,
      w0=w0,
      inner_solver=inner_solver,
      pool_valid=pool_valid,
      solver=solver,
      loss_reduction=loss_reduction,
      inner_tol=inner_tol,
      ihvp_rtol=ihvp_rtol,
      inner_max_iter=inner_max_iter,
      ihvp_max_iter=ihvp_max_iter,
      newton_cg_max_iter=newton_cg_max_iter,
    )
  n_bilevel, n_uniform = split_batch(b, uniform_fraction)
  pool_z = jnp.asarray(pool_z)
  dtype = pool_z.dtype
  if w0 is None:
    w0 = jnp.zeros((pool_z.shape[1], np.shape(pseudo_labels)[1]), dtype)
  sel = _select(
    key,
    pool_z,
    jnp.asarray(pseudo_labels, dtype),
    jnp.asarray(labeled_idx),
    jnp.asarray(labeled_labels),
    jnp.asarray(labeled_bank, dtype),
    bank_params,
    jnp.asarray(lr, dtype),
    jnp.asarray(l2, dtype),
    jnp.asarray(w0, dtype),
    None if pool_valid is None else jnp.asarray(pool_valid, bool),
    jnp.asarray(inner_tol, dtype),
    jnp.asarray(ihvp_rtol, dtype),
    bank_fn=bank_fn,
    n_bilevel=n_bilevel,
    n_uniform=n_uniform,
    inner_steps=inner_steps,
    batch_size=batch_size,
    cg_steps=cg_steps,
    inner_solver=inner.fit_inner_steps if inner_solver is None else inner_solver,
    solver=solver,
    reduction=loss_reduction,
    inner_max_iter=inner_max_iter,
    ihvp_max_iter=ihvp_max_iter,
    newton_cg_max_iter=newton_cg_max_iter,
  )
  if validate:
    check_scores(sel.scores)
  return sel


def check_scores(scores: jax.Array) -> None:
  """Raises FloatingPointError if a greedy score (n,) is NaN/inf (no-op on traced values).

  Scores are finite unless the inner solve, CG or a bank_fn produced NaN/inf; argmax over NaN
  then returns the first available index, so the picks would silently be 0, 1, 2, ...
  """
  s = tracing.concrete(scores)
  if s is not None and not np.all(np.isfinite(s)):
    k = int(np.argmin(np.isfinite(s)))
    raise FloatingPointError(
      f"greedy step {k} of {s.size} scored the pool with {s[k]}; its pick and the later ones "
      "are meaningless. Expected finite scores: check lr (the inner Adam may diverge), the "
      "copies bank_fn returns and the features."
    )
