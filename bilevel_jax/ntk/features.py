"""NTK Nystrom features and augmented-copy banks: the proxy-model inputs of the bilevel rule.

One pipeline, landmarks -> k(X, U) -> Nystrom map -> features and a bank function, driven by a
config block (the `bilevel` block of the experiment configs; `check_config` lists the entries
read) and used by the bilevel strategy's `prepare` hook and by `experiments.bilevel_evidence`.

* Landmarks U: `landmarks` training points drawn with `landmark_seed` (shared by
  every AL seed), so the pool-vs-landmark kernel k(X, U) (N, m) and the Nystrom map
  K_UU^{+1/2} (m, m) are computed once per dataset/landmark draw and cached on disk. They do not
  depend on the trained network. k(X, U) comes from `ntk.cache.landmark_kernel` (tiled,
  resumable row blocks under `cache_root()/ntk/`, progress bar with `config.progress`), the map
  from `ntk.nystrom.fit_nystrom`; features, map and landmark inputs are kept together in
  `cache_root()/al_kernel/` (file format and key unchanged since this lived in `al/kernel.py`).
* Inputs: clean log-mels standardized by the scalar mean and std of the first 512 training
  clips (`ssl.train.feature_stats`, as the classifier sees them).
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
from bilevel_jax.ntk import kernel_matrix as km
from bilevel_jax.ntk import nystrom
from bilevel_jax.ssl import train as ssl_train
from bilevel_jax.utils import io
from bilevel_jax.utils import paths

log = logging.getLogger(__name__)


def check_config(b: Any, num_train: int | None = None) -> None:
  """Checks the config block's entries this module reads (landmarks, landmark_seed,
  augmentations, ntk_depth, kernel, kernel_chunk); `landmarks` also against the training set
  size once it is known. Called before any data is decoded."""
  _check_kind(b.kernel)
  ntk_arch(b)
  for name in ("augmentations", "kernel_chunk", "landmarks"):
    if int(b[name]) < 1:
      raise ValueError(f"config.bilevel.{name}={b[name]}; expected >= 1.")
  if num_train is not None and int(b.landmarks) > num_train:
    raise ValueError(
      f"config.bilevel.landmarks={b.landmarks}; expected 1 <= m <= {num_train} (training set)."
    )


def _check_kind(kind: str) -> None:
  if kind not in ("ntk", "nngp"):
    raise ValueError(f"config.bilevel.kernel={kind!r}; expected 'ntk' or 'nngp'.")


def ntk_arch(b: Any) -> dict[str, Any]:
  """WRN-kernel keywords (`ntk.kernel_matrix.make_config`) of `config.bilevel`; a block without
  the ntk_activation entries (configs before issue 13) gets the legacy kernel."""
  activation = str(b.get("ntk_activation", "relu"))
  slope = float(b.get("ntk_leaky_slope", 0.1)) if activation != "relu" else 0.0
  arch = dict(
    depth=int(b.ntk_depth),
    activation=activation,
    leaky_slope=slope,
    final_activation=bool(b.get("ntk_final_activation", False)),
  )
  try:
    km.make_config(**arch)
  except ValueError as e:
    raise ValueError(f"config.bilevel: {e}") from e
  return arch


def _kernel_fn(arch: dict[str, Any], kind: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  from bilevel_jax.ntk import wrn_kernel  # pylint: disable=g-import-not-at-top

  _check_kind(kind)

  @jax.jit
  def fn(x1, x2):
    k = wrn_kernel.wrn_kernel(x1, x2, **arch, jit=False)
    return k.ntk if kind == "ntk" else k.nngp

  return fn


def nystrom_map(k_uu: np.ndarray, rcond: float = nystrom.DEFAULT_RCOND) -> np.ndarray:
  """Pseudo-inverse square root K_UU^{+1/2} (m, m) float32 of a PSD landmark kernel.

  `ntk.nystrom.fit_nystrom` (float64 eigh; eigenvalues <= rcond * largest are dropped).
  """
  return nystrom.fit_nystrom(k_uu, rcond=rcond).projection


class BankParams(NamedTuple):
  """Arrays the in-jit bank function reads (a traced pytree)."""

  waveforms: jax.Array  # (N, 16000) training clips
  noise: jax.Array  # (K, L) background noise
  landmark_x: jax.Array  # (m, 32, 32, 1) normalized log-mels of the landmarks
  nystrom: jax.Array  # (m, m) K_UU^{+1/2}
  mean: jax.Array  # () log-mel normalization
  std: jax.Array  # ()
  stream: jax.Array  # (2,) uint32 key data of the seed's bank stream


def make_bank_fn(n_aug: int, arch: dict[str, Any], kind: str) -> Callable[..., jax.Array]:
  """bank_fn(params, key, index) -> (A, m) Nystrom features of A augmented copies.

  arch: WRN-kernel keywords (`ntk_arch`).

  The copies of point i are drawn with fold_in(params.stream, i) (the `key` argument is
  ignored), so they are identical whether made for the labeled bank or for a greedy pick.
  """
  from bilevel_jax.ntk import wrn_kernel  # pylint: disable=g-import-not-at-top

  _check_kind(kind)

  def bank_fn(params: BankParams, key: jax.Array, index: jax.Array) -> jax.Array:
    del key
    k = jax.random.fold_in(jax.random.wrap_key_data(params.stream), index)
    w = jnp.repeat(params.waveforms[index][None], n_aug, axis=0)  # (A, 16000)
    x = (audio.augment_and_featurize(k, w, params.noise) - params.mean) / params.std
    kern = wrn_kernel.wrn_kernel(x, params.landmark_x, **arch, jit=False)
    return (kern.ntk if kind == "ntk" else kern.nngp) @ params.nystrom  # (A, m)

  return bank_fn


class KernelFeatures:
  """Nystrom features of the training set and cached augmented-copy banks per seed.

  Args:
    b: the config block (`check_config` lists its entries).
    waveforms: (N, 16000) float32 training clips; landmarks are drawn among them.
    noise: (K, L) background noise for the augmented copies.
    tag: cache name, e.g. "fsdd_2700" (the key also hashes the entries and the clips).
    progress: progress bar while k(X, U) is computed.
  """

  def __init__(
    self, b: Any, waveforms: np.ndarray, noise: np.ndarray, tag: str, *, progress: bool = False
  ):
    n = waveforms.shape[0]
    check_config(b, n)
    self.n_aug = int(b.augmentations)
    self.waveforms = waveforms
    mean, std = ssl_train.feature_stats(audio.featurize, waveforms)
    self._featurize = jax.jit(lambda w: (audio.featurize(w) - mean) / std)
    self.depth, self.kind = int(b.ntk_depth), str(b.kernel)
    self.arch = ntk_arch(b)  # WRN-kernel keywords
    self.chunk = int(b.kernel_chunk)  # rows per resumable block
    m = int(b.landmarks)
    self.landmark_idx = nystrom.draw_landmarks(jax.random.key(int(b.landmark_seed)), n, m)
    self.features, nys_map, landmark_x = self._load_or_compute(b, tag, progress)
    self.bank_fn = make_bank_fn(self.n_aug, self.arch, b.kernel)
    self._bank_many = jax.jit(jax.vmap(self.bank_fn, in_axes=(None, None, 0)))
    self._params = BankParams(
      jnp.asarray(waveforms),
      jnp.asarray(noise),
      jnp.asarray(landmark_x),
      jnp.asarray(nys_map),
      jnp.float32(mean),
      jnp.float32(std),
      jnp.zeros((2,), jnp.uint32),
    )
    self._banks: dict[tuple[int, int], np.ndarray] = {}  # (seed, index) -> (A, m)

  def _clean_x(self, idx: np.ndarray) -> np.ndarray:
    return self._clean_x_of(self.waveforms[idx])

  def _clean_x_of(self, waveforms: np.ndarray) -> np.ndarray:
    return np.concatenate(
      [
        np.asarray(self._featurize(jnp.asarray(waveforms[i : i + 256])))
        for i in range(0, len(waveforms), 256)
      ]
    )

  def _load_or_compute(self, b, tag, progress):
    spec = dict(
      tag=tag,
      n=int(self.waveforms.shape[0]),
      m=int(b.landmarks),
      landmark_seed=int(b.landmark_seed),
      depth=int(b.ntk_depth),
      kernel=b.kernel,
      checksum=float(np.asarray(self.waveforms[:, ::97], np.float64).sum()),
      version=1,
    )
    if not km.make_config(**self.arch).is_legacy():  # legacy: the key from before issue 13
      spec.update(
        activation=self.arch["activation"],
        leaky_slope=self.arch["leaky_slope"],
        final_activation=self.arch["final_activation"],
      )
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = paths.cache_root() / "al_kernel" / f"{tag}_{digest}.npz"
    if path.exists():
      with np.load(path) as f:
        return f["features"], f["nystrom"], f["landmark_x"]
    log.info("Computing the pool-vs-landmark kernel (%d x %d) -> %s", spec["n"], spec["m"], path)
    x = self._clean_x(np.arange(self.waveforms.shape[0]))  # (N, 32, 32, 1)
    landmark_x = x[self.landmark_idx]  # (m, 32, 32, 1)
    k_xu = np.asarray(
      ntk_cache.landmark_kernel(  # (N, m)
        x,
        self.landmark_idx,
        kind=b.kernel,
        **self.arch,
        block_rows=self.chunk,
        tile=(min(self.chunk, 16), 16),
        progress=bool(progress),
      ).matrix
    )
    k_uu = k_xu[self.landmark_idx]  # (m, m)
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

  def banks(self, seed: int, indices: np.ndarray, stream: jax.Array) -> np.ndarray:
    """(L, A, m) features of the augmented copies of training points `indices`.

    Copies are made with `bank_fn` (the same as inside the selection) and kept in memory per
    (seed, index), so each point's copies are computed once per seed.
    """
    params = self.bank_params(stream)
    new = [int(i) for i in indices if (int(seed), int(i)) not in self._banks]
    if new:
      copies = np.asarray(self._bank_many(params, jax.random.key(0), jnp.asarray(new, jnp.int32)))
      for i, c in zip(new, copies):
        self._banks[(int(seed), i)] = c
    return np.stack([self._banks[(int(seed), int(i))] for i in indices])

  def context_fields(self, seed: int, labeled: np.ndarray, stream: jax.Array) -> dict[str, Any]:
    """RoundContext fields for one seed: features (N, m), bank (L, A, m), bank_params."""
    return dict(
      features=self.features,
      bank=self.banks(seed, labeled, stream),
      bank_params=self.bank_params(stream),
    )

  def features_of(self, waveforms: np.ndarray, *, progress: bool = False) -> np.ndarray:
    """(T, m) float32 Nystrom features of other clean clips (e.g. a test split), k(x, U) cached
    by `ntk.cache.cross_kernel`."""
    x = self._clean_x_of(np.asarray(waveforms, np.float32))
    k_xu = np.asarray(
      ntk_cache.cross_kernel(
        x,
        np.asarray(self._params.landmark_x),
        kind=self.kind,
        **self.arch,
        block_rows=self.chunk,
        tile=(min(self.chunk, 16), 16),
        progress=progress,
      ).matrix
    )
    return (k_xu @ np.asarray(self._params.nystrom)).astype(np.float32)


def prepare(b: Any, data: Any, *, progress: bool = False) -> KernelFeatures:
  """KernelFeatures of `data.train_waveforms` (N, 16000) with `data.noise`, cached under the tag
  "<data.name>_<N>"."""
  tag = f"{data.name}_{data.train_waveforms.shape[0]}"
  return KernelFeatures(b, data.train_waveforms, data.noise, tag, progress=progress)
