"""Inner problem of the bilevel selection: L2 softmax regression on Nystrom features.

Model: h_w(z) = softmax(w^T z), w: (m, c).

Inner objective over a fixed-capacity bank of augmented copies (shapes never change while
points are added, so the greedy loop compiles once), in one of two conventions (`reduction`):

  "sum"  (the paper's Eq. 3): F(w) = sum_{valid slots i} (1 / A) sum_{a < A} CE(softmax(w^T z[i, a]), y[i])
                                     + l2 * ||w||_F^2
  "mean" (the project's first convention): the same data term divided by the number of valid
         slots, i.e. the mean over the valid (point, copy) pairs, + l2 * ||w||_F^2,

with CE(p, y) = -sum_k y_k log p_k. Labeled slots hold one-hot true labels, selected slots soft
pseudo-labels. `l2` is the paper's lambda (1e-4); the gradient of the penalty is 2 * l2 * w.
Under "mean" the penalty weighs #valid times more against the data than under "sum".
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax import lax
import optax

REDUCTIONS = ("mean", "sum")


def check_reduction(reduction: str) -> None:
  """Raises ValueError unless reduction is one of REDUCTIONS."""
  if reduction not in REDUCTIONS:
    raise ValueError(f"loss_reduction must be one of {REDUCTIONS}, got {reduction!r}.")


def slot_normaliser(valid: jax.Array, reduction: str, dtype) -> jax.Array:
  """What the summed per-slot losses are divided by: #valid slots ("mean") or 1 ("sum")."""
  check_reduction(reduction)
  if reduction == "sum":
    return jnp.asarray(1.0, dtype)
  return jnp.maximum(jnp.sum(valid), 1).astype(dtype)


class Bank(NamedTuple):
  """Augmented copies of the points in the inner problem, padded to a fixed capacity.

  z: (S, A, m) Nystrom features of A augmented copies of each of S slots.
  y: (S, c) label distribution of each slot (one-hot true label or soft pseudo-label).
  valid: (S,) bool, which slots are in use; invalid slots are ignored everywhere.
  """

  z: jax.Array
  y: jax.Array
  valid: jax.Array


class InnerState(NamedTuple):
  """Adam state of the inner solver, carried across greedy steps (warm start).

  w: (m, c) weights; opt_state: optax Adam state of w.
  """

  w: jax.Array
  opt_state: optax.OptState


def softmax_xent(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Cross-entropy -sum_k y_k log softmax(logits)_k. logits, y: (..., c) -> (...)."""
  # Written as sum(y) * logsumexp - <y, logits> rather than with jax.nn.log_softmax: under jit on
  # XLA:CPU (jax 0.10.2) the forward-over-reverse HVP of the log_softmax form returned wrong
  # values / NaN for c = 35 when the bank has empty slots (tests/bilevel/hvp_jit_test.py).
  return jnp.sum(y, axis=-1) * jax.nn.logsumexp(logits, axis=-1) - jnp.sum(y * logits, axis=-1)


def bank_objective(w: jax.Array, bank: Bank, l2: jax.Array, reduction: str = "mean") -> jax.Array:
  """F(w) over every valid (slot, copy) pair of `bank` (module docstring). Returns ()."""
  s, a, m = bank.z.shape
  logits = jnp.einsum("sam,mc->sac", bank.z, w)  # (S, A, c)
  xent = softmax_xent(logits, bank.y[:, None, :])  # (S, A)
  if reduction == "mean":  # the original expression, kept for bitwise-identical results
    weight = bank.valid.astype(w.dtype) / (a * jnp.maximum(jnp.sum(bank.valid), 1))
  else:
    weight = bank.valid.astype(w.dtype) / (a * slot_normaliser(bank.valid, reduction, w.dtype))
  del s, m
  return jnp.sum(xent * weight[:, None]) + l2 * jnp.sum(w * w)


def sample_pair_indices(
  key: jax.Array, valid: jax.Array, n_aug: int, *, steps: int, batch_size: int
) -> tuple[jax.Array, jax.Array]:
  """The minibatches of `steps` Adam steps, drawn at once: (slots, copies), each (steps, B) int.

  Every valid slot has A copies, so uniform over the valid (slot, copy) pairs is one uniform
  integer below A * #valid per draw: pair // A indexes the valid slots (in slot order), pair % A
  the copy. One vectorised draw for the whole inner solve: a per-step categorical over the
  slots (S Gumbel draws per pair) cost ~20% of a greedy selection on CPU.
  """
  order = jnp.argsort(~valid, stable=True)  # valid slots first, in index order
  pair = jax.random.randint(key, (steps, batch_size), 0, jnp.sum(valid) * n_aug)
  return order[pair // n_aug], pair % n_aug


def sample_pairs(key: jax.Array, bank: Bank, batch_size: int) -> tuple[jax.Array, jax.Array]:
  """Draws `batch_size` (slot, copy) pairs uniformly (with replacement) from the valid pairs
  (the first row of `sample_pair_indices`). Returns features (B, m) and labels (B, c)."""
  slots, copies = sample_pair_indices(
    key, bank.valid, bank.z.shape[1], steps=1, batch_size=batch_size
  )
  return bank.z[slots[0], copies[0]], bank.y[slots[0]]


def xent_grad_t(
  wt: jax.Array, z: jax.Array, y: jax.Array, row_weight: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """sum_i row_weight_i CE(softmax(wt z_i), y_i) and its gradient in the transposed layout.

  wt: (c, m) transposed weights; z: (B, m); y: (B, c); row_weight: (B,) or scalar.
  Returns (loss (), grad (c, m)). Written by hand (d CE / d logits = sum(y) softmax - y) so a
  step is two matmuls and one fused elementwise pass: on XLA:CPU elementwise work on (m, c)
  arrays with c = 10 in the minor dimension runs ~3x slower than on (c, m), and the forward
  matmul z @ w ~1.5x slower than z @ wt^T.
  """
  logits = z @ wt.T  # (B, c)
  lse = jax.nn.logsumexp(logits, axis=-1)
  sy = jnp.sum(y, axis=-1)
  loss = jnp.sum(row_weight * (sy * lse - jnp.sum(y * logits, axis=-1)))
  col_weight = row_weight[:, None] if jnp.ndim(row_weight) else row_weight
  dlogits = (sy[:, None] * jnp.exp(logits - lse[:, None]) - y) * col_weight
  return loss, dlogits.T @ z  # (c, m)


def init_inner_state(w0: jax.Array) -> InnerState:
  """Adam state at `w0` (m, c); the learning rate only enters the updates."""
  return InnerState(w0, optax.scale_by_adam().init(w0))


def fit_inner_steps(
  key: jax.Array,
  state: InnerState,
  bank: Bank,
  lr: jax.Array,
  l2: jax.Array,
  *,
  steps: int,
  batch_size: int | None,
  reduction: str = "mean",
) -> tuple[InnerState, jax.Array]:
  """Runs `steps` Adam steps on F from `state` in one lax.scan (un-jitted building block).

  Args:
    key: PRNG key for the minibatch draws (unused when batch_size is None).
    state: warm start.
    bank: the inner problem's points.
    lr, l2: Adam learning rate and the penalty lambda; traced scalars.
    steps: number of Adam steps (static).
    batch_size: pairs per minibatch (static); None uses the exact full-bank gradient, a
      deterministic mode for tests and references.
    reduction: "mean" or "sum" (module docstring; static). A minibatch estimates the data term
      by its mean CE times the number of valid slots under "sum" (unbiased).

  Returns:
    The new state and the per-step objective values (steps,): minibatch estimates of F, or
    F itself when batch_size is None.
  """
  chex.assert_rank([bank.z, bank.y, bank.valid, state.w], [3, 2, 1, 2])
  a = bank.z.shape[1]
  adam = optax.scale_by_adam()
  # Transposed (c, m) layout inside the loop (see `xent_grad_t`); the state is (m, c) outside.
  transpose = lambda tree: jax.tree.map(lambda x: x.T if jnp.ndim(x) == 2 else x, tree)
  zflat, rows_y, rows_w = bank_rows(bank, reduction)  # (S * A, m), (S * A, c)

  def adam_step(carry, loss_grad):
    wt, opt_state = carry
    loss, grad = loss_grad
    updates, opt_state = adam.update(grad + 2.0 * l2 * wt, opt_state, wt)
    return (wt - lr * updates, opt_state), loss + l2 * jnp.sum(wt * wt)

  if batch_size is None:

    def step(carry, _):
      return adam_step(carry, xent_grad_t(carry[0], zflat, rows_y, rows_w))

    xs = None
  else:
    slots, copies = sample_pair_indices(key, bank.valid, a, steps=steps, batch_size=batch_size)
    inv_b = jnp.asarray(1.0 / batch_size, state.w.dtype)
    if reduction != "mean":
      # Total row weight / B: #valid / normaliser (#valid slots hold A * #valid pairs).
      inv_b = (
        inv_b
        * slot_normaliser(bank.valid, "mean", state.w.dtype)
        / slot_normaliser(bank.valid, reduction, state.w.dtype)
      )

    def step(carry, idx):
      rows, slot = idx
      return adam_step(carry, xent_grad_t(carry[0], zflat[rows], bank.y[slot], inv_b))

    xs = (slots * a + copies, slots)

  (wt, opt_state), losses = lax.scan(
    step, (state.w.T, transpose(state.opt_state)), xs, length=steps
  )
  return InnerState(wt.T, transpose(opt_state)), losses


@functools.partial(jax.jit, static_argnames=("steps", "batch_size", "reduction"))
def fit_inner(
  key: jax.Array,
  state: InnerState,
  bank: Bank,
  lr: jax.Array | float,
  l2: jax.Array | float,
  *,
  steps: int = 1000,
  batch_size: int | None = 64,
  reduction: str = "mean",
) -> tuple[InnerState, jax.Array]:
  """Jitted `fit_inner_steps`; returns (state, F(w) over the full bank at the end)."""
  lr = jnp.asarray(lr, state.w.dtype)
  l2 = jnp.asarray(l2, state.w.dtype)
  state, _ = fit_inner_steps(
    key, state, bank, lr, l2, steps=steps, batch_size=batch_size, reduction=reduction
  )
  return state, bank_objective(state.w, bank, l2, reduction)


def bank_rows(bank: Bank, reduction: str = "mean") -> tuple[jax.Array, jax.Array, jax.Array]:
  """The bank as flat rows: z (S * A, m), y (S * A, c) and the weight of each row in F
  (valid / (A * #valid) under "mean", valid / A under "sum", zero for empty slots):
  F = sum_i weight_i CE_i + l2 ||w||^2."""
  s, a, m = bank.z.shape
  dtype = bank.z.dtype
  if reduction == "mean":  # the original expression, kept for bitwise-identical results
    weight = jnp.repeat(bank.valid.astype(dtype), a) / (a * jnp.maximum(jnp.sum(bank.valid), 1))
  else:
    weight = jnp.repeat(bank.valid.astype(dtype), a) / (
      a * slot_normaliser(bank.valid, reduction, dtype)
    )
  return bank.z.reshape(s * a, m), jnp.repeat(bank.y, a, axis=0), weight


def bank_objective_t(
  wt: jax.Array, bank: Bank, l2: jax.Array, reduction: str = "mean"
) -> jax.Array:
  """F at transposed weights wt (c, m); same value as `bank_objective(wt.T, ...)`. Returns ()."""
  z, y, weight = bank_rows(bank, reduction)
  return xent_grad_t(wt, z, y, weight)[0] + l2 * jnp.sum(wt * wt)


def bank_grad_t(
  wt: jax.Array, bank: Bank, l2: jax.Array, reduction: str = "mean"
) -> tuple[jax.Array, jax.Array]:
  """(F, grad F) at transposed weights wt (c, m), full bank. Returns ((), (c, m))."""
  z, y, weight = bank_rows(bank, reduction)
  loss, grad = xent_grad_t(wt, z, y, weight)
  return loss + l2 * jnp.sum(wt * wt), grad + 2.0 * l2 * wt


def bank_hvp_t(wt: jax.Array, bank: Bank, l2: jax.Array, reduction: str = "mean"):
  """Hessian-vector product of F at wt (c, m), as a function u (c, m) -> H u (c, m).

  Per row, the Hessian of sum(y) * logsumexp(l) in the logits is sum(y) (diag(p) - p p^T), so
  H u = sum_i weight_i sum(y_i) (p_i * a_i - p_i <p_i, a_i>) z_i^T + 2 l2 u with a_i = u z_i:
  two matmuls over the bank rows per product, the probabilities computed once.
  """
  return rows_hvp_t(wt, *bank_rows(bank, reduction), l2)


def rows_hvp_t(wt: jax.Array, z: jax.Array, y: jax.Array, weight: jax.Array, l2: jax.Array):
  """`bank_hvp_t` for explicit rows z (R, d), y (R, c), weight (R,) and wt (c, d)."""
  p = jax.nn.softmax(z @ wt.T, axis=-1)  # (R, c)
  scale = (weight * jnp.sum(y, axis=-1))[:, None]

  def matvec(u):
    a = z @ u.T  # (R, c)
    b = scale * p * (a - jnp.sum(p * a, axis=-1, keepdims=True))
    return b.T @ z + 2.0 * l2 * u

  return matvec


# solver(key, state, bank, lr, l2, *, steps, batch_size, reduction) -> (InnerState, losses)
InnerSolver = Callable[..., tuple[InnerState, jax.Array]]


@dataclasses.dataclass(frozen=True)
class LBFGSSolver:
  """Inner solver of a fixed number of full-bank L-BFGS iterations (optax, zoom line search),
  warm-started from the previous greedy step's w. A drop-in `inner_solver` for
  `select.select_batch`; equal instances hash equal, so they share one compilation.

  A fixed iteration count does not guarantee the minimiser: at l2 = 1e-4 on NTK features 20
  iterations got 2 of 5 picks of the exact greedy right (issue 13). For a solve to a gradient
  tolerance use `select_batch(..., solver="exact")` (`bilevel/exact.py`). The Adam state is
  passed through untouched; `key`, `lr`, `steps` and `batch_size` are not used.
  """

  iterations: int = 20
  memory_size: int = 10

  def __post_init__(self):
    if self.iterations < 1 or self.memory_size < 1:
      raise ValueError(
        f"LBFGSSolver needs iterations >= 1 and memory_size >= 1, got "
        f"{self.iterations}, {self.memory_size}."
      )

  def __call__(
    self,
    key: jax.Array,
    state: InnerState,
    bank: Bank,
    lr: jax.Array,
    l2: jax.Array,
    *,
    steps: Any = None,
    batch_size: Any = None,
    reduction: str = "mean",
  ) -> tuple[InnerState, jax.Array]:
    del key, lr, steps, batch_size
    f = lambda wt: bank_objective_t(wt, bank, l2, reduction)
    opt = optax.lbfgs(memory_size=self.memory_size)
    value_and_grad = optax.value_and_grad_from_state(f)

    def body(carry, _):
      wt, opt_state = carry
      value, grad = value_and_grad(wt, state=opt_state)
      updates, opt_state = opt.update(grad, opt_state, wt, value=value, grad=grad, value_fn=f)
      return (optax.apply_updates(wt, updates), opt_state), value

    wt0 = state.w.T
    (wt, _), values = lax.scan(body, (wt0, opt.init(wt0)), None, length=self.iterations)
    return InnerState(wt.T, state.opt_state), values
