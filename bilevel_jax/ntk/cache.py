"""Disk cache of the train/pool-vs-landmark kernel k(X, U), resumable row block by row block.

`landmark_kernel(x, idx)`: U = x[idx] (train + pool against its landmarks; rows idx are K_UU).
`cross_kernel(x, u)`: any U (e.g. test clips against training landmarks).

k(X, U) does not depend on the trained network, only on the inputs X, the landmark draw and
the architecture, so it is computed once and keyed by a hash of exactly those. Layout under
`cache_root()/ntk/<key>/`:
  kernel.npy   (N, m) float32, written in place through a memory map, one row block at a time;
  done.npy     (num_blocks,) bool, replaced atomically after each block's rows are flushed;
  meta.json    what the key hashes (written first), plus "complete": true at the end.
An interrupted run (exception, Ctrl-C, kill) leaves done.npy describing only flushed blocks, so
the next call computes the missing blocks and nothing else. Processes sharing the cache (e.g.
two AL runs started together) take an exclusive lock on `<key>.lock` while they fill a folder:
the second waits and then reads the finished kernel instead of re-creating the file under the
first one.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Callable, NamedTuple

import numpy as np
import tqdm

from bilevel_jax.ntk import kernel_matrix as km
from bilevel_jax.utils import io
from bilevel_jax.utils import paths

_VERSION = 1


class CachedKernel(NamedTuple):
  matrix: np.ndarray  # (N, m) float32 k(X, U) (a read-only memory map of the cache file)
  path: pathlib.Path  # the cache folder
  computed_blocks: int  # row blocks computed by this call (0 = cache hit)


def cache_key(x: np.ndarray, landmark_idx: np.ndarray, arch: dict, kind: str) -> str:
  """Hex digest of the inputs' bytes, the landmark indices, the architecture and the kernel kind."""
  h = hashlib.sha256()
  h.update(
    json.dumps(
      dict(shape=list(x.shape), dtype=str(x.dtype), arch=arch, kind=kind, version=_VERSION),
      sort_keys=True,
    ).encode()
  )
  h.update(np.ascontiguousarray(x).tobytes())
  h.update(np.ascontiguousarray(landmark_idx, np.int64).tobytes())
  return h.hexdigest()[:24]


def landmark_kernel(
  x: np.ndarray,
  landmark_idx: np.ndarray,
  *,
  kind: str = "ntk",
  block_rows: int = 256,
  tile=km.DEFAULT_TILE,
  progress: bool = True,
  cache_dir: str | pathlib.Path | None = None,
  callback: Callable[[int, int], None] | None = None,
  **arch,
) -> CachedKernel:
  """k(X, U) with U = X[landmark_idx], from the cache or computed (and cached) block by block.

  Args:
    x: (N, H, W, C) float32 inputs of train + pool (e.g. clean log-mels).
    landmark_idx: (m,) indices into x of the landmarks (`nystrom.draw_landmarks`).
    kind: "ntk" or "nngp".
    block_rows: rows per resumable block (a multiple of tile[0] wastes no padding).
    tile: (T1, T2) of `kernel_matrix`.
    progress: tqdm bar over row blocks.
    cache_dir: defaults to `paths.cache_root() / "ntk"`.
    callback: callback(blocks_done, num_blocks) after each flushed block.
    **arch: `kernel_matrix.make_config` keywords (depth, w_std, ...).

  Returns:
    CachedKernel; rows landmark_idx of `matrix` are K_UU.
  """
  _check_kind(kind)
  x = km._check_images(x, "x").astype(np.float32)
  idx = np.asarray(landmark_idx)
  if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
    raise ValueError(
      f"landmark_idx must be a non-empty 1-D integer array, got {idx.dtype} {idx.shape}."
    )
  if idx.min() < 0 or idx.max() >= x.shape[0]:
    raise ValueError(
      f"landmark_idx must lie in [0, {x.shape[0]}), got range [{idx.min()}, {idx.max()}]."
    )
  cfg = km.make_config(**arch)
  key = cache_key(x, idx, km.arch_key(cfg), kind)
  return _cached_rows(x, x[idx], key, cfg, kind, block_rows, tile, progress, cache_dir, callback)


def cross_key(x: np.ndarray, u: np.ndarray, arch: dict, kind: str) -> str:
  """Hex digest of both input arrays' bytes, the architecture and the kernel kind."""
  h = hashlib.sha256()
  h.update(
    json.dumps(
      dict(
        what="cross",
        x_shape=list(x.shape),
        u_shape=list(u.shape),
        dtype=str(x.dtype),
        arch=arch,
        kind=kind,
        version=_VERSION,
      ),
      sort_keys=True,
    ).encode()
  )
  h.update(np.ascontiguousarray(x).tobytes())
  h.update(np.ascontiguousarray(u).tobytes())
  return h.hexdigest()[:24]


def cross_kernel(
  x: np.ndarray,
  u: np.ndarray,
  *,
  kind: str = "ntk",
  block_rows: int = 256,
  tile=km.DEFAULT_TILE,
  progress: bool = True,
  cache_dir: str | pathlib.Path | None = None,
  callback: Callable[[int, int], None] | None = None,
  **arch,
) -> CachedKernel:
  """k(X, U) for any U (N, m), cached and resumable like `landmark_kernel`.

  Args:
    x: (N, H, W, C) float inputs (rows).
    u: (m, H, W, C) float inputs (columns), e.g. landmarks that are not rows of x.
    kind, block_rows, tile, progress, cache_dir, callback, **arch: as in `landmark_kernel`.
  """
  _check_kind(kind)
  x = km._check_images(x, "x").astype(np.float32)
  u = km._check_images(u, "u").astype(np.float32)
  if x.shape[1:] != u.shape[1:]:
    raise ValueError(f"x and u must share (H, W, C), got {x.shape[1:]} and {u.shape[1:]}.")
  cfg = km.make_config(**arch)
  key = cross_key(x, u, km.arch_key(cfg), kind)
  return _cached_rows(x, u, key, cfg, kind, block_rows, tile, progress, cache_dir, callback)


def _check_kind(kind: str) -> None:
  if kind not in ("ntk", "nngp"):
    raise ValueError(f"kind={kind!r}; expected 'ntk' or 'nngp'.")


def _cached_rows(
  x, landmarks, key, cfg, kind, block_rows, tile, progress, cache_dir, callback
) -> CachedKernel:
  """k(x, landmarks) under cache folder `key`: computes the row blocks not yet on disk."""
  if block_rows < 1:
    raise ValueError(f"block_rows={block_rows}; expected >= 1.")
  arch_dict = cfg._asdict()
  folder = pathlib.Path(cache_dir) if cache_dir else paths.cache_root() / "ntk"
  folder = folder / key
  meta_path, kernel_path = folder / "meta.json", folder / "kernel.npy"
  meta = dict(
    n=x.shape[0],
    m=landmarks.shape[0],
    kind=kind,
    arch=arch_dict,
    block_rows=block_rows,
    tile=list(km._check_tile(tile)),
    version=_VERSION,
    complete=False,
  )
  hit = lambda: meta_path.exists() and io.read_json(meta_path).get("complete")
  if hit():
    return CachedKernel(np.load(kernel_path, mmap_mode="r"), folder, 0)
  with io.exclusive_lock(
    folder.with_name(folder.name + ".lock"), f"the kernel cache entry {folder}"
  ):
    if hit():  # another process filled it while this one waited
      return CachedKernel(np.load(kernel_path, mmap_mode="r"), folder, 0)
    return _fill(x, landmarks, cfg, kind, block_rows, tile, progress, callback, folder, meta)


def _fill(
  x, landmarks, cfg, kind, block_rows, tile, progress, callback, folder: pathlib.Path, meta: dict
) -> CachedKernel:
  """Computes the blocks done.npy lacks (all in a fresh folder); the caller holds the lock."""
  n, m = x.shape[0], landmarks.shape[0]
  num_blocks = -(-n // block_rows)
  meta_path, kernel_path, done_path = (
    folder / "meta.json",
    folder / "kernel.npy",
    folder / "done.npy",
  )

  fresh = not (meta_path.exists() and kernel_path.exists() and done_path.exists())
  if not fresh:
    old = io.read_json(meta_path)
    done = np.load(done_path)
    fresh = old.get("block_rows") != block_rows or done.shape != (num_blocks,)
  if fresh:
    folder.mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(meta_path, meta)
    np.lib.format.open_memmap(kernel_path, mode="w+", dtype=np.float32, shape=(n, m)).flush()
    io.fsync_dir(folder)  # kernel.npy's entry is on disk before any done.npy names its rows
    done = np.zeros(num_blocks, bool)
    io.atomic_save_npy(done_path, done)
  out = np.lib.format.open_memmap(kernel_path, mode="r+")
  u_tiles = km._tiles(landmarks, km._check_tile(tile)[1])
  todo = np.flatnonzero(~done)
  computed = 0
  with tqdm.tqdm(
    total=num_blocks,
    initial=num_blocks - todo.size,
    unit="block",
    desc=f"k(X, U) {n}x{m}",
    disable=not progress,
  ) as bar:
    for b in todo:
      rows = slice(b * block_rows, min((b + 1) * block_rows, n))
      out[rows] = km.kernel_rows(x[rows], landmarks, cfg, tile=tile, kind=kind, x2_tiles=u_tiles)[0]
      out.flush()  # rows reach the file before the mask says so
      done[b] = True
      io.atomic_save_npy(done_path, done)
      computed += 1
      bar.update(1)
      if callback is not None:
        callback(int(done.sum()), num_blocks)
  del out
  meta["complete"] = True
  io.atomic_write_json(meta_path, meta)
  return CachedKernel(np.load(kernel_path, mmap_mode="r"), folder, computed)
