"""Pools larger than memory: chunked NTK -> Nystrom features on disk, and a streamed selection.

Only the inner problem (the bank: labeled points and picks, A copies each) and w, v (m x c)
live in memory. The pool enters the rule through two sums over its rows per greedy step,
grad G = (1/P) sum_x z_x (p_x - t_x)^T and the scores s_x = (p_x - y~_x) . (v^T z_x) with their
argmax, so both are accumulated over fixed-size chunks read from .npy files with pread (no
memory map: a mapped file would count every page touched in the process's resident set).
Each chunk is one call of a jitted function of fixed shape (the last chunk is padded and
masked), so everything compiles once. The inner solve, the inverse-HVP, the scoring and the bank
are the in-memory selection's own greedy step pieces (`bilevel.greedy`), and keys are split
exactly as in `bilevel.select`, so on a pool that fits in memory the streamed selection picks
the same points as `select_batch` with the same `loss_reduction`.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from typing import Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax.bilevel import checks
from bilevel_jax.bilevel import greedy
from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import outer
from bilevel_jax.bilevel import settings as settings_lib
from bilevel_jax.utils import io


class RowFile:
  """Row chunks of a 2-D+ .npy file (C order), read with pread into a reused buffer.

  Attributes: path, shape (N, ...), dtype, row_bytes.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    with open(self.path, "rb") as f:
      version = np.lib.format.read_magic(f)
      if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
      else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
      self.offset = f.tell()
    if fortran or len(shape) < 1:
      raise ValueError(f"{self.path}: need a C-order array with a row axis, got shape {shape}.")
    self.shape, self.dtype = tuple(shape), np.dtype(dtype)
    self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize

  def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows [start, stop) as an array (a view into `out` if given)."""
    if not 0 <= start <= stop <= self.shape[0]:
      raise ValueError(f"{self.path}: rows [{start}, {stop}) outside [0, {self.shape[0]}).")
    n = stop - start
    if out is None:
      out = np.empty((n,) + self.shape[1:], self.dtype)
    view = out[:n]
    fd = os.open(self.path, os.O_RDONLY)
    try:
      buf, done = memoryview(view.reshape(-1).view(np.uint8)), 0
      while done < n * self.row_bytes:
        got = os.preadv(fd, [buf[done:]], self.offset + start * self.row_bytes + done)
        if got <= 0:
          raise IOError(f"{self.path}: short read at row {start}.")
        done += got
    finally:
      os.close(fd)
    return view


class RowWriter:
  """Appends row chunks to a new .npy file of known shape (sequential writes, no memory map)."""

  def __init__(self, path: str | os.PathLike, shape: tuple, dtype=np.float32):
    self.path, self.shape, self.dtype, self.rows = os.fspath(path), tuple(shape), np.dtype(dtype), 0
    # A unique temporary name: two writers of one path never share a partial file.
    fd, self._tmp = tempfile.mkstemp(
      dir=os.path.dirname(self.path) or ".",
      prefix=f".{os.path.basename(self.path)}.",
      suffix=".partial",
    )
    os.chmod(self._tmp, io.default_file_mode())
    self._f = os.fdopen(fd, "wb")
    np.lib.format.write_array_header_1_0(
      self._f,
      {
        "descr": np.lib.format.dtype_to_descr(self.dtype),
        "fortran_order": False,
        "shape": self.shape,
      },
    )

  def append(self, rows: np.ndarray) -> None:
    rows = np.ascontiguousarray(rows, self.dtype)
    if rows.shape[1:] != self.shape[1:] or self.rows + rows.shape[0] > self.shape[0]:
      raise ValueError(
        f"{self.path}: chunk {rows.shape} does not fit rows {self.rows}.. of {self.shape}."
      )
    self._f.write(rows.tobytes())
    self.rows += rows.shape[0]

  def close(self) -> None:
    self._f.flush()
    os.fsync(self._f.fileno())
    self._f.close()
    if self.rows != self.shape[0]:
      os.unlink(self._tmp)
      raise ValueError(f"{self.path}: wrote {self.rows} of {self.shape[0]} rows.")
    os.replace(self._tmp, self.path)
    io.fsync_dir(os.path.dirname(self.path) or ".")


def chunks(n: int, rows: int) -> Iterator[tuple[int, int]]:
  """[start, stop) of consecutive chunks of `rows` rows covering range(n)."""
  if rows < 1:
    raise ValueError(f"chunk size must be >= 1 rows, got {rows}.")
  for s in range(0, n, rows):
    yield s, min(s + rows, n)


def stream_nystrom_features(
  waveforms: RowFile,
  out_path: str | os.PathLike,
  featurize_fn: Callable,
  kernel_fn: Callable,
  landmarks: jax.Array,
  nystrom_map: jax.Array,
  *,
  chunk_rows: int = 256,
) -> dict:
  """Pool features z = k(featurize(x), U) M, chunk by chunk from waveforms on disk to disk.

  Args:
    waveforms: (N, L) raw audio (memory-light reader of the cached waveforms).
    out_path: where the (N, m) float32 features go (.npy, written sequentially).
    featurize_fn: traceable, (R, L) -> (R, 32, 32, 1) log-mels.
    kernel_fn: traceable, (R, 32, 32, 1), (m, 32, 32, 1) -> (R, m), e.g. the WRN-28 NTK.
    landmarks: (m, 32, 32, 1) landmark log-mels; nystrom_map: (m, m) = (K_UU)^(+1/2).
    chunk_rows: rows per chunk; only this many rows of audio, log-mels and kernel are in memory.

  Returns:
    Timing dict: seconds (total), compile_s (first chunk), rows, kernel entries per second.
  """
  if not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
    raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}.")
  n = waveforms.shape[0]
  m = nystrom_map.shape[0]
  fn = jax.jit(lambda w, u, mm: kernel_fn(featurize_fn(w), u) @ mm)
  writer = RowWriter(out_path, (n, m))
  buf = np.empty((chunk_rows,) + waveforms.shape[1:], waveforms.dtype)
  t0 = time.perf_counter()
  first = None
  for s, e in chunks(n, chunk_rows):
    x = waveforms.read(s, e, buf)
    if e - s < chunk_rows:  # keep one compiled shape
      x = np.concatenate([x, np.zeros((chunk_rows - (e - s),) + x.shape[1:], x.dtype)])
    z = np.asarray(fn(x, landmarks, nystrom_map))[: e - s]
    if first is None:
      first = time.perf_counter() - t0
    writer.append(z)
  writer.close()
  total = time.perf_counter() - t0
  steady = max(total - first, 1e-9)
  return {
    "seconds": total,
    "first_chunk_s": first,
    "rows": n,
    "m": m,
    "entries_per_s_steady": (n - min(chunk_rows, n)) * m / steady if n > chunk_rows else None,
  }


def _validate_files(features: RowFile, pseudo_labels: RowFile, chunk_rows: int) -> None:
  """Chunked checks of the files: finite features (P, m), distribution rows (P, c)."""
  for s, e in chunks(features.shape[0], chunk_rows):
    z = features.read(s, e)
    if not np.all(np.isfinite(z)):
      row, col = np.argwhere(~np.isfinite(z))[0]
      raise ValueError(
        f"{features.path}: features row {s + row} column {col} is {z[row, col]}; "
        "expected finite values."
      )
    y = pseudo_labels.read(s, e)
    if not np.all(np.isfinite(y)):
      row = int(np.argwhere(~np.isfinite(y))[0, 0])
      raise ValueError(f"{pseudo_labels.path}: pseudo_labels row {s + row} is not finite.")
    checks.check_label_rows(f"{pseudo_labels.path}: pseudo_labels", y, row_offset=s)


class StreamedSelection(NamedTuple):
  indices: np.ndarray  # (b,) greedy picks then uniform picks
  scores: np.ndarray  # (n_bilevel,)
  cg_residual: np.ndarray  # (n_bilevel,)
  stage_seconds: dict  # validate / inner / outer_grad / cg / scoring -> seconds


@functools.partial(jax.jit, static_argnames="reduction")
def _grad_chunk(wt, z, t, valid, reduction):
  """The chunk's (valid rows') share of grad G, transposed: (c, m); "mean" divides by P later."""
  return outer.outer_value_grad_t(wt, z, t, valid, "sum" if reduction == "mean" else reduction)[1]


@jax.jit
def _score_chunk(wt, vt, z, y, avail):
  """(best available score, its row) within the chunk, as the in-memory greedy step scores."""
  probs = jax.nn.softmax(z @ wt.T, axis=-1)
  return greedy.best_pick(outer.pool_scores_t(probs, vt, z, y), avail)


def select_streamed(
  key: jax.Array,
  features: RowFile,
  pseudo_labels: RowFile,
  labeled_idx: np.ndarray,
  labeled_labels: np.ndarray,
  labeled_bank: np.ndarray,
  copies_fn: Callable,
  *,
  b: int,
  uniform_fraction: float = 0.1,
  lr: float = 1e-3,
  l2: float = 1e-4,
  inner_steps: int = 1000,
  batch_size: int | None = 64,
  cg_steps: int = 30,
  loss_reduction: str = "mean",
  chunk_rows: int = 65536,
  log: Callable | None = None,
  validate: bool = True,
) -> StreamedSelection:
  """`bilevel.select.select_batch` for pools on disk; same rule, same keys, same picks.

  Args:
    features: (P, m) float32 Nystrom features on disk; pseudo_labels: (P, c) on disk.
    labeled_idx, labeled_labels: (L,) pool indices and classes; labeled_bank: (L, A, m).
    copies_fn: `copies_fn(key, index, z_row (m,)) -> (A, m)` augmented copies of a pick
      (the in-memory `bank_fn(params, key, index)` with the pool row passed in).
    loss_reduction: "mean" (default here, the streamed selection's convention from before the
      paper's sum became `select_batch`'s default) or "sum"; as in `select_batch`.
    chunk_rows: pool rows per chunk (memory ~ chunk_rows * (m + 2c) * 4 bytes, twice).
    validate: one pass over both files before the selection: features finite, pseudo-label
      rows distributions (as `select_batch` checks in memory): one extra read of each file
      (the selection itself reads them 2 * n_bilevel times).
    Others: as in `select_batch`.
  """
  if len(features.shape) != 2 or len(pseudo_labels.shape) != 2:
    raise ValueError(
      f"features must be (P, m) and pseudo_labels (P, c), got {features.shape} "
      f"and {pseudo_labels.shape}."
    )
  p, m = features.shape
  c = pseudo_labels.shape[1]
  if pseudo_labels.shape[0] != p:
    raise ValueError(f"pseudo_labels has {pseudo_labels.shape[0]} rows, features {p}.")
  if np.ndim(labeled_bank) != 3:
    raise ValueError(f"labeled_bank must be (L, A, m={m}), got {np.shape(labeled_bank)}.")
  n_lab, n_aug, bm = np.shape(labeled_bank)
  if (
    bm != m
    or np.shape(labeled_labels) != (n_lab,)
    or np.shape(labeled_idx) != (n_lab,)
    or n_lab < 1
    or n_aug < 1
  ):
    raise ValueError(
      f"labeled_idx, labeled_labels must be (L,) and labeled_bank (L, A, m={m}) "
      f"with L, A >= 1, got {np.shape(labeled_idx)}, {np.shape(labeled_labels)} "
      f"and {np.shape(labeled_bank)}."
    )
  # The paper solver only: the streamed loop runs its fixed-step pieces.
  settings = settings_lib.SelectionSettings(
    uniform_fraction, lr, l2, inner_steps, batch_size, cg_steps, loss_reduction=loss_reduction
  )
  checks.check_settings(b, settings)
  if b > p - n_lab:
    raise ValueError(f"b={b!r} must be an int in [1, {p - n_lab}] (pool minus labeled).")
  if not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
    raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}.")
  checks.check_labeled(labeled_idx, labeled_labels, p, c)
  if not np.all(np.isfinite(labeled_bank)):
    raise ValueError("labeled_bank contains NaN/inf values; expected finite features.")
  t_validate = time.perf_counter()
  if validate:
    _validate_files(features, pseudo_labels, chunk_rows)
  t_validate = time.perf_counter() - t_validate
  labeled_idx = np.asarray(labeled_idx, np.int64)
  n_bilevel, n_uniform = greedy.split_batch(b, uniform_fraction)
  inner_key, bank_key, uniform_key = jax.random.split(key, 3)
  log = log or (lambda *_: None)

  onehot = np.eye(c, dtype=np.float32)[np.asarray(labeled_labels)]
  lab_pos = {int(i): k for k, i in enumerate(labeled_idx)}
  available = np.ones(p, bool)
  available[labeled_idx] = False
  bank = greedy.init_bank(jnp.asarray(labeled_bank), jnp.asarray(onehot), n_bilevel, jnp.float32)
  state = inner.init_inner_state(jnp.zeros((m, c), jnp.float32))
  vt = jnp.zeros((c, m), jnp.float32)
  step_settings = settings_lib.traced_as(settings, jnp.float32)
  zbuf = np.empty((chunk_rows, m), np.float32)
  ybuf = np.empty((chunk_rows, c), np.float32)
  t = {"validate": t_validate, "inner": 0.0, "outer_grad": 0.0, "cg": 0.0, "scoring": 0.0}

  def passes():
    for s, e in chunks(p, chunk_rows):
      features.read(s, e, zbuf)  # fills zbuf in place
      pseudo_labels.read(s, e, ybuf)
      valid = np.zeros(chunk_rows, bool)
      valid[: e - s] = True
      if e - s < chunk_rows:
        zbuf[e - s :], ybuf[e - s :] = 0.0, 0.0
      # Fresh numpy copies: on CPU a device array may alias the host buffer (even via
      # jnp.array(copy=True), measured), and with async dispatch the next read would overwrite
      # rows that a queued chunk computation has not consumed yet (flaky CI failure).
      yield s, e, jnp.asarray(zbuf.copy()), jnp.asarray(ybuf.copy()), valid

  picks, scores, resid = [], [], []
  for k in range(n_bilevel):
    t0 = time.perf_counter()
    solve = greedy.inner_step(
      k, state, bank, inner_key, step_settings, inner_solver=inner.fit_inner_steps
    )
    state = solve.state
    wt = jax.block_until_ready(state.w.T)
    t1 = time.perf_counter()
    g_t = jnp.zeros((c, m), jnp.float32)
    for s, e, z, y, valid in passes():
      tt = y  # G's targets: the true labels on labeled rows
      hits = [(i - s, lab_pos[i]) for i in lab_pos if s <= i < e]
      if hits:
        rows, ks = zip(*hits)
        tt = y.at[np.asarray(rows)].set(onehot[np.asarray(ks)])
      g_t = g_t + _grad_chunk(wt, z, tt, jnp.asarray(valid), loss_reduction)
    g_t = jax.block_until_ready(g_t / p if loss_reduction == "mean" else g_t)
    t2 = time.perf_counter()
    cg, _ = greedy.ihvp_step(wt, bank, g_t, vt, solve, step_settings)
    vt = jax.block_until_ready(cg.x)
    t3 = time.perf_counter()
    best, best_i = -np.inf, -1
    for s, e, z, y, valid in passes():
      avail = np.zeros(chunk_rows, bool)
      avail[: e - s] = available[s:e]
      sc, i = jax.device_get(_score_chunk(wt, vt, z, y, jnp.asarray(avail)))
      if sc > best:
        best, best_i = float(sc), s + int(i)
    t4 = time.perf_counter()
    if best_i < 0:
      raise RuntimeError("no available pool point left to pick.")
    z_row = jnp.asarray(features.read(best_i, best_i + 1)[0])
    y_row = jnp.asarray(pseudo_labels.read(best_i, best_i + 1)[0])
    copies = copies_fn(jax.random.fold_in(bank_key, k), best_i, z_row)
    bank = greedy.add_to_bank(bank, n_lab + k, copies, y_row)
    available[best_i] = False
    picks.append(best_i)
    scores.append(best)
    resid.append(float(cg.residual))
    for name, dt in zip(
      ("inner", "outer_grad", "cg", "scoring"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
    ):
      t[name] += dt
    log(
      f"step {k}: pick {best_i} score {best:.4g} inner {t1 - t0:.2f}s grad {t2 - t1:.2f}s "
      f"cg {t3 - t2:.2f}s score {t4 - t3:.2f}s"
    )
  if n_uniform:
    top = greedy.uniform_picks(uniform_key, jnp.asarray(available), n_uniform, jnp.float32)
    picks.extend(np.asarray(top).tolist())
  return StreamedSelection(np.asarray(picks, np.int64), np.asarray(scores), np.asarray(resid), t)
