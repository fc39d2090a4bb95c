"""Proxy-model inputs of the bilevel strategy: NTK Nystrom features and augmented-copy banks.

* Landmarks U: `bilevel.landmarks` training points drawn with `bilevel.landmark_seed` (shared by
  every AL seed), so the pool-vs-landmark kernel k(X, U) (N, m) and the Nystrom map
  K_UU^{+1/2} (m, m) are computed once per dataset/landmark draw and cached on disk. They do not
  depend on the trained network. k(X, U) comes from `ntk.cache.landmark_kernel` (tiled,
  resumable row blocks under `cache_root()/ntk/`, progress bar with `config.progress`), the map
  from `ntk.nystrom.fit_nystrom`; features, map and landmark inputs are kept together in
  `cache_root()/al_kernel/` (same file format and key as before).
* Features z_x = K_UU^{+1/2} k(x, U) of the clean log-mels (N, m).
* Bank: A augmented copies per point, features (A, m); computed (in JAX) when a point enters
  the labeled set and cached in memory across rounds, and inside the jitted greedy selection
  for picked points (`make_bank_fn`). A point's copies use key fold_in(bank_stream, index), so
  they do not depend on when they are made and a resumed run sees the same copies.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax import audio
from bilevel_jax.ntk import cache as ntk_cache
from bilevel_jax.ntk import nystrom
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax.utils import io
from bilevel_jax.utils import paths

log = logging.getLogger(__name__)


def check_config(b: Any, num_train: int | None = None) -> None:
  """The `config.bilevel` entries this module reads; `landmarks` also against the training
  set size once it is known. The AL loop calls it before any data is decoded."""
  _check_kind(b.kernel)
  for name in ("augmentations", "kernel_batch", "landmarks"):
    if int(b[name]) < 1:
      raise ValueError(f"config.bilevel.{name}={b[name]}; expected >= 1.")
  if num_train is not None and int(b.landmarks) > num_train:
    raise ValueError(f"config.bilevel.landmarks={b.landmarks}; expected 1 <= m <= {num_train} "
                     "(training set).")


def _check_kind(kind: str) -> None:
  if kind not in ("ntk", "nngp"):
    raise ValueError(f"config.bilevel.kernel={kind!r}; expected 'ntk' or 'nngp'.")


def _kernel_fn(depth: int, kind: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  from bilevel_jax.ntk import wrn_kernel  # pylint: disable=g-import-not-at-top
  _check_kind(kind)

  @jax.jit
  def fn(x1, x2):
    k = wrn_kernel.wrn_kernel(x1, x2, depth=depth, jit=False)
    return k.ntk if kind == "ntk" else k.nngp
  return fn


def nystrom_map(k_uu: np.ndarray, rcond: float = nystrom.DEFAULT_RCOND) -> np.ndarray:
  """Pseudo-inverse square root K_UU^{+1/2} (m, m) float32 of a PSD landmark kernel.

  `ntk.nystrom.fit_nystrom` (float64 eigh; eigenvalues <= rcond * largest are dropped).
  """
  return nystrom.fit_nystrom(k_uu, rcond=rcond).projection


class BankParams(NamedTuple):
  """Arrays the in-jit bank function reads (a traced pytree)."""
  waveforms: jax.Array    # (N, 16000) training clips
  noise: jax.Array        # (K, L) background noise
  landmark_x: jax.Array   # (m, 32, 32, 1) normalized log-mels of the landmarks
  nystrom: jax.Array      # (m, m) K_UU^{+1/2}
  mean: jax.Array         # () log-mel normalization
  std: jax.Array          # ()
  stream: jax.Array       # (2,) uint32 key data of the seed's bank stream


def make_bank_fn(n_aug: int, depth: int, kind: str) -> Callable[..., jax.Array]:
  """bank_fn(params, key, index) -> (A, m) Nystrom features of A augmented copies.

  The copies of point i are drawn with fold_in(params.stream, i) (the `key` argument is
  ignored), so they are identical whether made for the labeled bank or for a greedy pick.
  """
  from bilevel_jax.ntk import wrn_kernel  # pylint: disable=g-import-not-at-top
  _check_kind(kind)

  def bank_fn(params: BankParams, key: jax.Array, index: jax.Array) -> jax.Array:
    del key
    k = jax.random.fold_in(jax.random.wrap_key_data(params.stream), index)
    w = jnp.repeat(params.waveforms[index][None], n_aug, axis=0)       # (A, 16000)
    x = (audio.augment_and_featurize(k, w, params.noise) - params.mean) / params.std
    kern = wrn_kernel.wrn_kernel(x, params.landmark_x, depth=depth, jit=False)
    return (kern.ntk if kind == "ntk" else kern.nngp) @ params.nystrom   # (A, m)

  return bank_fn


class KernelFeatures:
  """Nystrom features of the training set and cached augmented-copy banks per seed."""

  def __init__(self, config: Any, waveforms: np.ndarray, noise: np.ndarray, tag: str):
    b = config.bilevel
    n = waveforms.shape[0]
    check_config(b, n)
    self.n_aug = int(b.augmentations)
    self.waveforms = waveforms
    mean, std = ssl_train.feature_stats(audio.featurize, waveforms)
    self._featurize = jax.jit(lambda w: (audio.featurize(w) - mean) / std)
    self._kernel = _kernel_fn(int(b.ntk_depth), b.kernel)
    self.batch = int(b.kernel_batch)                              # rows per resumable block
    m = int(b.landmarks)
    self.landmark_idx = nystrom.draw_landmarks(jax.random.key(int(b.landmark_seed)), n, m)
    self.features, nys_map, landmark_x = self._load_or_compute(config, tag)
    self.bank_fn = make_bank_fn(self.n_aug, int(b.ntk_depth), b.kernel)
    self._bank_many = jax.jit(jax.vmap(self.bank_fn, in_axes=(None, None, 0)))
    self._params = BankParams(jnp.asarray(waveforms), jnp.asarray(noise), jnp.asarray(landmark_x),
                              jnp.asarray(nys_map), jnp.float32(mean), jnp.float32(std),
                              jnp.zeros((2,), jnp.uint32))
    self._banks: dict[tuple[int, int], np.ndarray] = {}  # (seed, index) -> (A, m)

  def _clean_x(self, idx: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(self._featurize(jnp.asarray(self.waveforms[idx[i:i + 256]])))
                           for i in range(0, len(idx), 256)])

  def _load_or_compute(self, config, tag):
    b = config.bilevel
    spec = dict(tag=tag, n=int(self.waveforms.shape[0]), m=int(b.landmarks),
                landmark_seed=int(b.landmark_seed), depth=int(b.ntk_depth), kernel=b.kernel,
                checksum=float(np.asarray(self.waveforms[:, ::97], np.float64).sum()),
                version=1)
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = paths.cache_root() / "al_kernel" / f"{tag}_{digest}.npz"
    if path.exists():
      with np.load(path) as f:
        return f["features"], f["nystrom"], f["landmark_x"]
    log.info("Computing the pool-vs-landmark kernel (%d x %d) -> %s", spec["n"], spec["m"], path)
    x = self._clean_x(np.arange(self.waveforms.shape[0]))        # (N, 32, 32, 1)
    landmark_x = x[self.landmark_idx]                             # (m, 32, 32, 1)
    k_xu = np.asarray(ntk_cache.landmark_kernel(                  # (N, m)
        x, self.landmark_idx, kind=b.kernel, depth=int(b.ntk_depth), block_rows=self.batch,
        tile=(min(self.batch, 16), 16), progress=bool(config.get("progress", False))).matrix)
    k_uu = k_xu[self.landmark_idx]                                # (m, m)
    nys = nystrom_map(k_uu)
    features = (k_xu @ nys).astype(np.float32)
    # Two processes (e.g. two lanes of one job) may finish together: each writes a unique
    # temporary file; the lock orders the renames of the features and their spec.
    with io.exclusive_lock(path.with_name(path.name + ".lock"), f"the kernel features {path}"):
      io.atomic_savez(path, features=features, nystrom=nys, landmark_x=landmark_x)
      io.atomic_write_json(path.with_suffix(".json"), spec)
    return features, nys, landmark_x

  def bank_params(self, stream: jax.Array) -> BankParams:
    return self._params._replace(stream=jax.random.key_data(stream))

  def context_fields(self, seed: int, labeled: np.ndarray, stream: jax.Array) -> dict[str, Any]:
    """RoundContext fields for one seed: features (N, m), bank (L, A, m), bank_params.

    Copies of points new to the labeled set are computed now and cached for later rounds.
    """
    params = self.bank_params(stream)
    new = [int(i) for i in labeled if (int(seed), int(i)) not in self._banks]
    if new:
      copies = np.asarray(self._bank_many(params, jax.random.key(0), jnp.asarray(new, jnp.int32)))
      for i, c in zip(new, copies):
        self._banks[(int(seed), i)] = c
    bank = np.stack([self._banks[(int(seed), int(i))] for i in labeled])
    return dict(features=self.features, bank=bank, bank_params=params)


def prepare(config: Any, data: Any) -> KernelFeatures:
  tag = f"{data.name}_{data.train_labels.shape[0]}"
  return KernelFeatures(config, data.train_waveforms, data.noise, tag)

