"""Synthetic Nystrom-feature pools for benchmarks and scaling tests where real data is absent.

A pool point x of class k has features z_x = mu_k + sigma * eps (m dims), its soft pseudo-label
is softmax(beta * (<z_x, mu> + noise * gumbel)) over the class means (a teacher that is right most of the time but
unsure near boundaries), and its augmented copies are z_x + tau * eps'. Every chunk of rows is a
pure function of (seed, chunk index), so a 1M-point pool can be regenerated or streamed in any
order without holding it in memory.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class SyntheticSpec(NamedTuple):
  """Shape and noise levels of a synthetic pool.

  n: pool size P; m: feature dim (landmarks); c: classes; copies: augmented copies per point (A);
  sigma: within-class noise; tau: augmentation noise; beta: teacher inverse temperature;
  noise: scale of the teacher's Gumbel logit noise;
  seed: everything is derived from it.
  """

  n: int
  m: int
  c: int
  copies: int = 8
  sigma: float = 1.0
  tau: float = 0.3
  beta: float = 1.0
  noise: float = 2.0
  seed: int = 0


def _check(spec: SyntheticSpec) -> None:
  for name in ("n", "m", "c", "copies"):
    if getattr(spec, name) < 1:
      raise ValueError(f"SyntheticSpec.{name} must be >= 1, got {getattr(spec, name)}.")
  if spec.c < 2:
    raise ValueError(f"SyntheticSpec.c must be >= 2 classes, got {spec.c}.")


def class_means(spec: SyntheticSpec) -> jax.Array:
  """(c, m) class means with unit-scale entries / sqrt(m) * 3 so classes overlap moderately."""
  key = jax.random.fold_in(jax.random.key(spec.seed), 0)
  return 3.0 * jax.random.normal(key, (spec.c, spec.m)) / jnp.sqrt(spec.m)


BLOCK = 4096  # rows per generation block: row i depends only on (seed, i // BLOCK, i % BLOCK)


@functools.partial(jax.jit, static_argnums=0)
def block(spec: SyntheticSpec, j: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Rows [j * BLOCK, (j + 1) * BLOCK) of the (unbounded) pool: z (BLOCK, m), pseudo-labels
  (BLOCK, c), true labels (BLOCK,). Rows past spec.n are valid draws the caller drops."""
  mu = class_means(spec)
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(spec.seed), 1), j)
  k_lab, k_eps, k_teach = jax.random.split(key, 3)
  labels = jax.random.randint(k_lab, (BLOCK,), 0, spec.c)
  z = mu[labels] + spec.sigma * 3.0 * jax.random.normal(k_eps, (BLOCK, spec.m)) / jnp.sqrt(spec.m)
  # Teacher: class-mean similarity plus per-point Gumbel noise, so about a fifth of the
  # pseudo-labels are wrong and many are unsure, as for a model trained on few labels.
  noise = spec.noise * jax.random.gumbel(k_teach, (BLOCK, spec.c))
  pseudo = jax.nn.softmax(spec.beta * (z @ mu.T + noise), axis=-1)
  return z, pseudo, labels.astype(jnp.int32)


def chunk(spec: SyntheticSpec, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Rows [start, stop) of the pool on the host: z (R, m) float32, pseudo (R, c), labels (R,).

  Row i depends only on (seed, i), so chunks of any size tile the same pool.
  """
  _check(spec)
  if not 0 <= start <= stop <= spec.n:
    raise ValueError(f"chunk: need 0 <= start <= stop <= n={spec.n}, got [{start}, {stop}).")
  parts = []
  for j in range(start // BLOCK, -(-stop // BLOCK)):
    lo, hi = max(start, j * BLOCK) - j * BLOCK, min(stop, (j + 1) * BLOCK) - j * BLOCK
    parts.append([np.asarray(a)[lo:hi] for a in block(spec, j)])
  if not parts:
    return (
      np.zeros((0, spec.m), np.float32),
      np.zeros((0, spec.c), np.float32),
      np.zeros((0,), np.int32),
    )
  return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def pool(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The whole pool on the host: features (P, m) float32, pseudo-labels (P, c), labels (P,)."""
  return chunk(spec, 0, spec.n)


def augmented_copies(spec: SyntheticSpec, key: jax.Array, z: jax.Array) -> jax.Array:
  """A copies of one point: z (m,) -> (A, m), z plus isotropic augmentation noise."""
  eps = jax.random.normal(key, (spec.copies, z.shape[-1]), z.dtype)
  return z[None, :] + spec.tau * 3.0 * eps / jnp.sqrt(z.shape[-1])


def bank_params(pool_z: jax.Array, copies: int, tau: float = 0.3) -> dict:
  """Traced parameters of `bank_fn`: the pool features, the noise level and a (A,) shape carrier
  (the number of copies must be static, so it travels as an array shape)."""
  return {
    "z": jnp.asarray(pool_z),
    "tau": jnp.asarray(tau, jnp.asarray(pool_z).dtype),
    "copies": jnp.zeros((copies,), jnp.int8),
  }


def bank_fn(params: dict, key: jax.Array, index: jax.Array) -> jax.Array:
  """`bilevel.select` bank function for synthetic pools: A noisy copies of row `index` (A, m),
  made on the fly so no (P, A, m) bank is ever stored."""
  z = params["z"][index]
  a = params["copies"].shape[0]
  eps = jax.random.normal(key, (a, z.shape[-1]), z.dtype)
  return z[None, :] + params["tau"] * 3.0 * eps / jnp.sqrt(z.shape[-1])
