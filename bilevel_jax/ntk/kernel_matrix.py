"""Streaming kernel matrices: tiles of pairs, one compilation per tile shape, bounded memory.

The WRN kernel of a T1 x T2 tile is one jitted program (`wrn_kernel._pair_kernels_jit`); a matrix
is a host loop over tiles whose last row/column tile is padded (with copies of the first input)
instead of recompiled. Per-input ReLU statistics (`wrn_kernel.input_stats`) are computed once per
input tile and reused across tiles: tiles run in row blocks of `ROW_BLOCK` rows, column tile by
column tile, so only one row block's statistics (~90 KB per 32x32 input) and one column tile's
are held. Symmetric matrices (x2 is None) compute only the tiles on and above the diagonal and
mirror them.
"""

from __future__ import annotations

import collections
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from bilevel_jax.ntk import wrn_kernel as wk

KINDS = ("ntk", "nngp", "both")
DEFAULT_TILE = (16, 16)
ROW_BLOCK = 256  # rows whose input statistics are held at once (~23 MB at 32x32 inputs)


def make_config(
  depth: int = 28,
  w_std: float = 1.0,
  b_std: float = 0.0,
  readout_w_std: float = 1.0,
  readout_b_std: float = 0.0,
  shortcut_size: int = 1,
  activate_shortcut: bool = False,
  activation: str = "leaky_relu",
  leaky_slope: float = wk.TRAINED_LEAKY_SLOPE,
  final_activation: bool = True,
) -> wk.WRNKernelConfig:
  """A validated `WRNKernelConfig` (raises ValueError naming the bad value)."""
  cfg = wk.make_config(
    depth,
    w_std,
    b_std,
    readout_w_std,
    readout_b_std,
    shortcut_size,
    activate_shortcut,
    activation,
    leaky_slope,
    final_activation,
  )
  if cfg.shortcut_size not in (1, 3):
    raise ValueError(f"shortcut_size={shortcut_size}; expected 1 or 3.")
  return cfg


def arch_key(cfg: wk.WRNKernelConfig) -> dict:
  """The architecture fields a cache key hashes: all of them, except that the legacy kernel
  (ReLU, no final activation) omits the activation fields, so caches written before these
  options existed stay valid, and ReLU omits the (unused) leaky slope."""
  arch = cfg._asdict()
  if cfg.is_legacy():
    for name in ("activation", "leaky_slope", "final_activation"):
      del arch[name]
  elif cfg.activation == "relu":
    del arch["leaky_slope"]
  return arch


def _check_images(x: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 4 or x.shape[0] == 0:
    raise ValueError(
      f"{name} must be a non-empty batch of images (N, H, W, C), got shape {x.shape}."
    )
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{name} must be floating point, got dtype {x.dtype}.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} contains NaN or inf values.")
  return x


def _tiles(x: np.ndarray, t: int) -> list[jax.Array]:
  """(N, H, W, C) -> ceil(N / t) device arrays (t, H, W, C), the last padded with copies of x[0].

  A list, not one stacked array: indexing a device array dispatches a slice per tile, which
  cost ~20% of a kernel matrix on CPU.
  """
  n = x.shape[0]
  pad = -n % t
  if pad:
    x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)])
  return [jnp.asarray(x[i : i + t]) for i in range(0, x.shape[0], t)]


def _check_tile(tile) -> tuple[int, int]:
  t1, t2 = (tile, tile) if isinstance(tile, int) else tuple(tile)
  if t1 < 1 or t2 < 1:
    raise ValueError(f"tile={tile}; expected positive sizes (T1, T2).")
  return int(t1), int(t2)


def _stream_tiles(
  a: list[jax.Array], b: list[jax.Array], cfg: wk.WRNKernelConfig, pairs, emit
) -> None:
  """Computes the tiles `pairs` [(i, j)] of row tiles a[i] (T1, ...) x column tiles b[j] (T2, ...).

  Calls emit(i, j, Kernels of numpy arrays) once per pair. Tiles run in row blocks, and column by
  column inside a block, so each input tile's statistics are computed once per row block.
  Dispatch is asynchronous: one tile stays in flight while the previous one is copied out.
  """
  per_block = max(1, ROW_BLOCK // a[0].shape[0])
  order = sorted(pairs, key=lambda p: (p[0] // per_block, p[1], p[0]))
  row_stats, col_stats = {}, (None, None)
  pending = collections.deque()

  def drain(limit):
    while len(pending) > limit:
      i, j, res = pending.popleft()
      emit(i, j, wk.Kernels(np.asarray(res.nngp), np.asarray(res.ntk)))

  for i, j in order:
    if i not in row_stats:
      if row_stats and next(iter(row_stats)) // per_block != i // per_block:
        row_stats.clear()  # a new row block
      row_stats[i] = wk._input_stats_jit(a[i], cfg)
    if col_stats[0] != j:
      col_stats = (j, wk._input_stats_jit(b[j], cfg))
    pending.append((i, j, wk._pair_kernels_jit(a[i], b[j], row_stats[i], col_stats[1], cfg)))
    drain(1)
  drain(0)


def kernel_rows(
  x1: np.ndarray,
  x2: np.ndarray,
  cfg: wk.WRNKernelConfig,
  *,
  tile=DEFAULT_TILE,
  kind: str = "ntk",
  x2_tiles: list[jax.Array] | None = None,
) -> np.ndarray:
  """k(x1, x2) for a row block x1 (B, H, W, C) against all of x2 (N2, ...). Returns (K, B, N2).

  K = 2 (nngp, ntk) if kind == "both" else 1. x2_tiles (optional) is `_tiles(x2, T2)`, passed
  to avoid re-padding x2 for every row block.
  """
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r}; expected one of {KINDS}.")
  x1 = _check_images(x1, "x1")
  if x2_tiles is None:
    x2 = _check_images(x2, "x2")
  if x1.shape[1:] != x2.shape[1:]:
    raise ValueError(f"x1 and x2 must share (H, W, C), got {x1.shape[1:]} and {x2.shape[1:]}.")
  t1, t2 = _check_tile(tile)
  b, n2 = x1.shape[0], x2.shape[0]
  x1_tiles = _tiles(np.asarray(x1, np.float32), t1)
  if x2_tiles is None:
    x2_tiles = _tiles(np.asarray(x2, np.float32), t2)
  names = ("nngp", "ntk") if kind == "both" else (kind,)
  out = np.empty((len(names), len(x1_tiles) * t1, len(x2_tiles) * t2), np.float32)

  def emit(i, j, res):
    for k, name in enumerate(names):
      out[k, i * t1 : (i + 1) * t1, j * t2 : (j + 1) * t2] = getattr(res, name)

  pairs = [(i, j) for i in range(len(x1_tiles)) for j in range(len(x2_tiles))]
  _stream_tiles(x1_tiles, x2_tiles, cfg, pairs, emit)
  return out[:, :b, :n2]


def kernel_matrix(
  x1: np.ndarray,
  x2: np.ndarray | None = None,
  *,
  kind: str = "ntk",
  tile=DEFAULT_TILE,
  progress: bool = True,
  callback: Callable[[int, int], None] | None = None,
  **arch,
) -> np.ndarray | wk.Kernels:
  """Streams the WRN kernel matrix over tiles of pairs.

  Args:
    x1: (N1, H, W, C) float images (e.g. log-mels (N, 32, 32, 1)).
    x2: (N2, H, W, C) or None for the symmetric k(x1, x1) (only tiles on/above the diagonal are
      computed; then tiles are square with side tile[1]).
    kind: "ntk", "nngp" or "both" (returns `Kernels` of numpy arrays).
    tile: (T1, T2) pairs per compiled program, or an int for square tiles. T2 >= 16 keeps the
      innermost loop vectorized; 128-512 pairs per tile amortize the per-call overhead (8x32,
      16x16, 32x16 and 4x64 measured within noise of each other).
    progress: show a tqdm progress bar over tiles.
    callback: called as callback(done_tiles, total_tiles) after every tile (tests, monitoring).
    **arch: architecture keywords of `make_config` (depth, w_std, b_std, ...).

  Returns:
    (N1, N2) float32 numpy array, or Kernels(nngp, ntk) if kind == "both".
  """
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r}; expected one of {KINDS}.")
  cfg = make_config(**arch)
  x1 = _check_images(x1, "x1")
  symmetric = x2 is None
  x2 = x1 if symmetric else _check_images(x2, "x2")
  if x1.shape[1:] != x2.shape[1:]:
    raise ValueError(f"x1 and x2 must share (H, W, C), got {x1.shape[1:]} and {x2.shape[1:]}.")
  t1, t2 = _check_tile(tile)
  if symmetric:
    t1 = t2
  a, b = _tiles(x1.astype(np.float32), t1), _tiles(x2.astype(np.float32), t2)
  pairs = [(i, j) for i in range(len(a)) for j in range(len(b)) if not symmetric or j >= i]
  names = ("nngp", "ntk") if kind == "both" else (kind,)
  out = np.empty((len(names), len(a) * t1, len(b) * t2), np.float32)
  bar = tqdm.tqdm(
    total=len(pairs),
    desc=f"{kind} kernel {x1.shape[0]}x{x2.shape[0]}",
    unit="tile",
    disable=not progress,
  )
  done = 0

  def emit(i, j, res):
    nonlocal done
    for k, name in enumerate(names):
      block = getattr(res, name)
      if symmetric and i == j:
        block = 0.5 * (block + block.T)  # float rounding differs between (a, b) and (b, a)
      out[k, i * t1 : (i + 1) * t1, j * t2 : (j + 1) * t2] = block
      if symmetric and i != j:
        out[k, j * t2 : (j + 1) * t2, i * t1 : (i + 1) * t1] = block.T
    done += 1
    bar.update(1)
    if callback is not None:
      callback(done, len(pairs))

  try:
    _stream_tiles(a, b, cfg, pairs, emit)
  finally:
    bar.close()
  out = out[:, : x1.shape[0], : x2.shape[0]]
  if kind == "both":
    return wk.Kernels(out[0], out[1])
  return out[0]
