"""Sharding of pool-sized arrays over all devices (a 1-D Mesh over the pool axis).

Pool-sized work in a selection (NTK rows against the landmarks, Nystrom features, pseudo-label
losses, outer gradient, scores) is row-wise in the pool, so one mesh axis named "pool" suffices:
every pool-sized array is split along its first axis, everything else (landmarks, the inner
problem's bank, w, the CG vectors) is replicated. The jitted selection is then the same program
on 1 or N devices: jit reads the input shardings and GSPMD inserts the two collectives the rule
needs (the all-reduce of grad G = Z^T (P - Y~) and the global argmax of the scores).

Multi-host: call `jax.distributed.initialize()` first; `jax.devices()` then lists every host's
devices, `pool_mesh()` spans them, and each process passes only its own rows to
`shard_pool_from_local` (see docs/scaling.md).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

POOL_AXIS = "pool"


def pool_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named "pool" over `devices` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("pool_mesh: got an empty device list.")
  return Mesh(np.asarray(devices), (POOL_AXIS,))


def pool_spec(ndim: int) -> P:
  """PartitionSpec splitting axis 0 over the pool axis, replicating the rest."""
  if ndim < 1:
    raise ValueError(f"pool_spec: pool arrays need ndim >= 1, got {ndim}.")
  return P(POOL_AXIS, *([None] * (ndim - 1)))


def pool_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Sharding of an (N, ...) pool array of rank `ndim`: rows split over the mesh."""
  return NamedSharding(mesh, pool_spec(ndim))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding that places a full copy on every device of the mesh."""
  return NamedSharding(mesh, P())


def padded_size(n: int, multiple: int) -> int:
  """Smallest size >= n divisible by `multiple`."""
  if n < 0 or multiple < 1:
    raise ValueError(f"padded_size: need n >= 0 and multiple >= 1, got n={n}, multiple={multiple}.")
  return -(-n // multiple) * multiple


def pad_rows(x: Any, size: int, fill: float = 0.0) -> Any:
  """Pads axis 0 of `x` (N, ...) (numpy or jax) up to (size, ...) with `fill`."""
  n = x.shape[0]
  if size < n:
    raise ValueError(f"pad_rows: target size {size} is below the {n} rows present.")
  if size == n:
    return x
  widths = [(0, size - n)] + [(0, 0)] * (x.ndim - 1)
  if isinstance(x, np.ndarray):
    return np.pad(x, widths, constant_values=fill)
  return jnp.pad(x, widths, constant_values=fill)


def shard_pool(mesh: Mesh, x: Any) -> jax.Array:
  """Places a pool-sized array split along axis 0 over the mesh (single process).

  Args:
    mesh: from `pool_mesh`.
    x: (N, ...) with N divisible by the number of devices (pad with `pad_rows` first).
  """
  n_dev = mesh.devices.size
  if x.shape[0] % n_dev:
    raise ValueError(
      f"shard_pool: pool axis of length {x.shape[0]} is not divisible by the {n_dev} devices "
      f"of the mesh; pad it with pad_rows(x, padded_size({x.shape[0]}, {n_dev}))."
    )
  return jax.device_put(x, pool_sharding(mesh, x.ndim))


def replicate(mesh: Mesh, x: Any) -> jax.Array:
  """Places a copy of `x` on every device of the mesh."""
  return jax.device_put(x, replicated_sharding(mesh))


def shard_pool_from_local(mesh: Mesh, local_rows: np.ndarray, global_rows: int) -> jax.Array:
  """Builds a global pool array from this process's contiguous block of rows (multi-host).

  Args:
    mesh: spanning the devices of all processes.
    local_rows: (global_rows / process_count, ...) rows owned by this process, in process order.
    global_rows: N of the global array, divisible by the number of devices.
  """
  if global_rows % mesh.devices.size:
    raise ValueError(
      f"shard_pool_from_local: global_rows={global_rows} must be divisible by the "
      f"{mesh.devices.size} devices; pad the pool first."
    )
  shape = (global_rows,) + tuple(local_rows.shape[1:])
  return jax.make_array_from_process_local_data(
    pool_sharding(mesh, local_rows.ndim), local_rows, shape
  )


def describe(x: jax.Array) -> str:
  """One line: global shape and how many devices hold a shard, for logs and tests."""
  shards = x.addressable_shards
  return (
    f"shape={tuple(x.shape)} sharding={x.sharding} shards={len(shards)} "
    f"shard_shape={tuple(shards[0].data.shape)}"
  )


def place_pool_tree(mesh: Mesh, tree: Any, pool_size: int) -> Any:
  """Shards every array leaf whose axis 0 has length `pool_size`; replicates the others."""

  def put(x):
    x = jnp.asarray(x)
    if x.ndim >= 1 and x.shape[0] == pool_size:
      return shard_pool(mesh, x)
    return replicate(mesh, x)

  return jax.tree.map(put, tree)


def select_batch_sharded(
  mesh: Mesh,
  key: jax.Array,
  pool_z: Any,
  pseudo_labels: Any,
  labeled_idx: Any,
  labeled_labels: Any,
  labeled_bank: Any,
  bank_fn: Any,
  bank_params: Any,
  *,
  b: int,
  **kwargs,
) -> Any:
  """`bilevel.select.select_batch` with the pool axis split over `mesh` (same program).

  pool_z (P, m), pseudo_labels (P, c) and every bank_params leaf with P rows are sharded over
  the "pool" axis; the rest is replicated. jit compiles the unchanged selection for these input
  shardings (GSPMD): pool-sized matmuls (logits, grad G, scores) run where the rows live, grad G
  is all-reduced, the argmax is global. When P is not divisible by the number of devices the
  pool-sized arrays are padded to the next multiple and the padding rows are masked out with
  `pool_valid` (never scored, picked or drawn, not in G), so the greedy picks are those of the
  unpadded pool; the uniform share is drawn over the padded shape, so it may differ. A
  bank_params leaf that is not pool-indexed but happens to have P rows is padded and sharded
  too: give such leaves another leading size.
  """
  from bilevel_jax.bilevel import select as nystrom_select  # pylint: disable=g-import-not-at-top
  from bilevel_jax.bilevel import settings as settings_lib  # pylint: disable=g-import-not-at-top

  p = np.shape(pool_z)[0]
  settings, kwargs = settings_lib.split_options(kwargs)  # defaults: select_batch's
  validate = kwargs.pop("validate", True)
  others = ("w0", "inner_solver", "pool_valid", "validate")
  unknown = set(kwargs) - set(others)
  if unknown:
    raise ValueError(
      f"select_batch_sharded: unknown keyword(s) {sorted(unknown)}; expected those of "
      f"bilevel.select.select_batch: {sorted(settings_lib.FIELDS + others)}."
    )
  if kwargs.get("pool_valid") is not None and np.shape(kwargs["pool_valid"]) != (p,):
    raise ValueError(
      f"select_batch_sharded: pool_valid must be (P={p},), got {np.shape(kwargs['pool_valid'])}."
    )
  if validate:
    inputs = nystrom_select.SelectionInputs(
      pool_z, pseudo_labels, labeled_idx, labeled_labels, labeled_bank, bank_fn, bank_params
    )
    nystrom_select.validate_inputs(inputs, b=b, settings=settings, **kwargs)
  size = padded_size(p, mesh.devices.size)
  if size != p:
    c = np.shape(pseudo_labels)[1]
    valid = (
      np.ones((p,), bool)
      if kwargs.get("pool_valid") is None
      else np.asarray(kwargs["pool_valid"], bool)
    )
    kwargs["pool_valid"] = pad_rows(valid, size, fill=False)
    pool_z = pad_rows(pool_z, size)
    pseudo_labels = pad_rows(pseudo_labels, size, fill=1.0 / c)  # rows stay distributions
    bank_params = jax.tree.map(
      lambda x: pad_rows(x, size) if np.ndim(x) >= 1 and np.shape(x)[0] == p else x, bank_params
    )
  if kwargs.get("pool_valid") is not None:
    kwargs["pool_valid"] = shard_pool(mesh, np.asarray(kwargs["pool_valid"], bool))
  pool_z, pseudo_labels = shard_pool(mesh, pool_z), shard_pool(mesh, pseudo_labels)
  bank_params = place_pool_tree(mesh, bank_params, size)
  labeled_idx, labeled_labels, labeled_bank = (
    replicate(mesh, a) for a in (labeled_idx, labeled_labels, labeled_bank)
  )
  # validate=False: validated above on host arrays; avoid gathering shards back.
  inputs = nystrom_select.SelectionInputs(
    pool_z, pseudo_labels, labeled_idx, labeled_labels, labeled_bank, bank_fn, bank_params
  )
  sel = nystrom_select.select_with_settings(
    key, inputs, b=b, settings=settings, validate=False, **kwargs
  )
  if validate:
    nystrom_select.check_scores(sel.scores)
  return sel


def nystrom_features_sharded(
  mesh: Mesh, kernel_fn: Any, x_pool: Any, landmarks: Any, nystrom_map: Any
) -> jax.Array:
  """Nystrom features z = k(x, U) M of a pool, rows computed on the device that holds them.

  Args:
    mesh: from `pool_mesh`.
    kernel_fn: traceable `kernel_fn(x (R, ...), landmarks (m, ...)) -> (R, m)`, e.g. the WRN NTK.
    x_pool: (P, ...) pool inputs (log-mels), P divisible by the number of devices.
    landmarks: (m, ...) replicated; nystrom_map: (m, m) = (K_UU)^(+1/2), replicated.

  Returns:
    (P, m) features sharded over the pool axis.
  """
  x_pool = shard_pool(mesh, x_pool)
  landmarks, nystrom_map = replicate(mesh, landmarks), replicate(mesh, nystrom_map)
  fn = jax.jit(lambda x, u, mm: kernel_fn(x, u) @ mm, out_shardings=pool_sharding(mesh, 2))
  return fn(x_pool, landmarks, nystrom_map)
