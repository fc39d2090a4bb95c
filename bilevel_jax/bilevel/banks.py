"""Bank functions: the augmented copies of a point picked by the greedy bilevel selection.

A bank function `bank_fn(bank_params, key, index) -> (A, m)` gives the Nystrom features of A
augmented copies of pool point `index`. The bank function is static (hashed by identity) and its arrays
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
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

BankFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


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
