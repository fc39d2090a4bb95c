"""Inner problem of the bilevel selection: L2 softmax regression on Nystrom features.

Model: h_w(z) = softmax(w^T z), w: (m, c).

Inner objective over a fixed-capacity bank of augmented copies (shapes never change while
points are added, so the greedy loop compiles once):

  F(w) = (1 / N) * sum_{valid slots i} sum_{a < A} CE(softmax(w^T z[i, a]), y[i]) + l2 * ||w||_F^2

with N = A * (number of valid slots) the number of valid (point, copy) pairs and
CE(p, y) = -sum_k y_k log p_k. Labeled slots hold one-hot true labels, selected slots soft
pseudo-labels. `l2` is the paper's lambda (1e-4); the gradient of the penalty is 2 * l2 * w.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax import lax
import optax


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


def bank_objective(w: jax.Array, bank: Bank, l2: jax.Array) -> jax.Array:
  """F(w) over every valid (slot, copy) pair of `bank` (module docstring). Returns ()."""
  s, a, m = bank.z.shape
  logits = jnp.einsum("sam,mc->sac", bank.z, w)                       # (S, A, c)
  xent = softmax_xent(logits, bank.y[:, None, :])                     # (S, A)
  weight = bank.valid.astype(w.dtype) / (a * jnp.maximum(jnp.sum(bank.valid), 1))
  del s, m
  return jnp.sum(xent * weight[:, None]) + l2 * jnp.sum(w * w)


def minibatch_objective(w: jax.Array, z: jax.Array, y: jax.Array, l2: jax.Array) -> jax.Array:
  """Unbiased estimate of F: mean CE over sampled pairs + penalty. z: (B, m), y: (B, c)."""
  return jnp.mean(softmax_xent(z @ w, y)) + l2 * jnp.sum(w * w)


def sample_pairs(key: jax.Array, bank: Bank, batch_size: int) -> tuple[jax.Array, jax.Array]:
  """Draws `batch_size` (slot, copy) pairs uniformly (with replacement) from the valid pairs.

  Every valid slot has A copies, so uniform over pairs = uniform valid slot, then uniform copy.
  Returns features (B, m) and labels (B, c).
  """
  slot_key, copy_key = jax.random.split(key)
  logits = jnp.where(bank.valid, 0.0, -jnp.inf)
  slots = jax.random.categorical(slot_key, logits, shape=(batch_size,))
  copies = jax.random.randint(copy_key, (batch_size,), 0, bank.z.shape[1])
  return bank.z[slots, copies], bank.y[slots]


def init_inner_state(w0: jax.Array) -> InnerState:
  """Adam state at `w0` (m, c); the learning rate only enters the updates."""
  return InnerState(w0, optax.scale_by_adam().init(w0))


def fit_inner_steps(key: jax.Array, state: InnerState, bank: Bank, lr: jax.Array,
                    l2: jax.Array, *, steps: int, batch_size: int | None
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

  Returns:
    The new state and the per-step objective values (steps,): minibatch estimates of F, or
    F itself when batch_size is None.
  """
  chex.assert_rank([bank.z, bank.y, bank.valid, state.w], [3, 2, 1, 2])
  adam = optax.scale_by_adam()

  def step(carry, step_key):
    w, opt_state = carry
    if batch_size is None:
      loss, grad = jax.value_and_grad(bank_objective)(w, bank, l2)
    else:
      z, y = sample_pairs(step_key, bank, batch_size)
      loss, grad = jax.value_and_grad(minibatch_objective)(w, z, y, l2)
    updates, opt_state = adam.update(grad, opt_state, w)
    return (w - lr * updates, opt_state), loss

  keys = jax.random.split(key, steps)
  (w, opt_state), losses = lax.scan(step, tuple(state), keys)
  return InnerState(w, opt_state), losses


@functools.partial(jax.jit, static_argnames=("steps", "batch_size"))
def fit_inner(key: jax.Array, state: InnerState, bank: Bank, lr: jax.Array | float,
              l2: jax.Array | float, *, steps: int = 1000, batch_size: int | None = 64
              ) -> tuple[InnerState, jax.Array]:
  """Jitted `fit_inner_steps`; returns (state, F(w) over the full bank at the end)."""
  lr = jnp.asarray(lr, state.w.dtype)
  l2 = jnp.asarray(l2, state.w.dtype)
  state, _ = fit_inner_steps(key, state, bank, lr, l2, steps=steps, batch_size=batch_size)
  return state, bank_objective(state.w, bank, l2)
