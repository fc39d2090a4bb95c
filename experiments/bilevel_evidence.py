r"""Evidence for the bilevel batch selection on real FSDD data (issue 4, SPEC section 3).

  python -m experiments.bilevel_evidence --workdir=runs/bilevel_evidence \
      --parts=kernel,lr_check,first_batch,al_curve,timing              # m = 500, ~1 h on 2 cores
  python -m experiments.bilevel_evidence --workdir=runs/bilevel_evidence \
      --parts=kernel,first_batch,timing --m_first=2000 --m_timing=2000  # paper's m

Parts (JSON under --results_dir, written atomically, the command inside; reruns resume):
  kernel       fill the cache of the WRN-28 NTK of the clean train/test log-mels against the
               landmarks (column blocks of 500 landmarks; `ntk.cache`: resumable row blocks,
               progress bar).
  lr_check     gap of Adam (1000 steps, batch 64) to the L-BFGS optimum per learning rate.
  first_batch  10 class-covering labels per seed; pseudo-labels from L2 logistic regression on
               the Nystrom features of the labeled points' augmented copies; the first batch
               (b = 10) of bilevel, uniform and max-entropy (entropy of those pseudo-labels):
               classes covered and points that model misclassifies (paper Fig. 2: 9 and 9).
  al_curve     proxy active learning: logistic regression on clean Nystrom features is the
               model, 10 -> 60 labels, b = 10, bilevel vs uniform, test accuracy per round; one
               JSON per (method, seed).
  timing       select_batch for b = 10 from the 2700-clip pool: compile time (lower/compile)
               apart from runs of the compiled program, with cached augmented copies.

Features: NTK between clean log-mels and m landmarks drawn at random from the training set,
z_x = K_UU^(+1/2) k(x, U). Landmarks for a smaller m are the first m of the same permutation, so
one cache serves every m. Augmented copies of point i use the key fold_in(aug_key, i): the same
copies whichever seed or method asks, cached on disk under --workdir.

Caveat: here the pseudo-labels come from the same proxy (logistic regression on the same
features) as the inner problem, so at step 0 the inner solution nearly minimises the pool part
of G and grad G is small; in the paper they come from MixMatch, a different, stronger model.
"""
from __future__ import annotations

import functools
import json
import pathlib
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax import audio
from bilevel_jax import data as data_lib
from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import select
from bilevel_jax.ntk import cache as ntk_cache
from bilevel_jax.ntk import kernel_matrix as km
from bilevel_jax.ntk import nystrom as nystrom_lib
from bilevel_jax.utils import io

_WORKDIR = flags.DEFINE_string("workdir", None, "Caches (kernels, banks) go here.", required=True)
_DATA_ROOT = flags.DEFINE_string("data_root", None, "Data root holding fsdd/ (default: "
                                 "$BILEVEL_JAX_DATA, else ../shared/data).")
_RESULTS = flags.DEFINE_string("results_dir", "results/bilevel_evidence", "JSON output folder.")
_PARTS = flags.DEFINE_list("parts", ["kernel", "first_batch", "al_curve", "timing"],
                           "Parts to run (kernel: fill the cache of the pool/test kernel).")
_M_MAX = flags.DEFINE_integer("m_max", 2000, "Landmarks of the cached pool kernel.")
_M_FIRST = flags.DEFINE_integer("m_first", 500, "Landmarks for the first-batch part.")
_M_CURVE = flags.DEFINE_integer("m_curve", 500, "Landmarks for the AL-curve part (CPU scale).")
_M_TIMING = flags.DEFINE_integer("m_timing", 500, "Landmarks for the timing part.")
_N_AUG = flags.DEFINE_integer("n_aug", 4, "Augmented copies per point in the inner problem "
                              "(each costs m NTK entries; the authors' code caches 100).")
_SEEDS = flags.DEFINE_integer("seeds", 6, "Seeds (initial labeled sets).")
_B = flags.DEFINE_integer("b", 10, "Batch size per round.")
_FINAL_LABELS = flags.DEFINE_integer("final_labels", 60, "AL curve stops at this many labels.")
_LR = flags.DEFINE_float("lr", 3e-2, "Adam learning rate of the inner problem and the model "
                         "(3e-2: smallest gap to the L-BFGS optimum in the lr_check part; the "
                         "authors' 1e-3 leaves the objective 3x above its optimum here).")
_L2 = flags.DEFINE_float("l2", 1e-4, "lambda of the inner problem and the model.")
_STEPS = flags.DEFINE_integer("inner_steps", 1000, "Adam steps per inner solve.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Inner minibatch (pairs).")
_CG = flags.DEFINE_integer("cg_steps", 30, "CG steps.")
_SOLVER = flags.DEFINE_enum("solver", "paper", ["paper", "exact"],
                            "Selection solver (bilevel.select.select_batch); the committed "
                            "results used 'paper'.")
_LOSS_REDUCTION = flags.DEFINE_enum("loss_reduction", "mean", ["mean", "sum"],
                                    "Convention of F and G; the committed results used 'mean' "
                                    "('sum' is the paper's Eq. 3).")
_LANDMARK_SEED = flags.DEFINE_integer("landmark_seed", 0, "Seed of the landmark permutation.")
_AUG_SEED = flags.DEFINE_integer("aug_seed", 0, "Seed of the augmented copies.")
_TILE = flags.DEFINE_integer("tile", 64, "Kernel tile: landmark columns per call.")
_ROW_TILE = flags.DEFINE_integer("row_tile", 4, "Kernel tile: rows per call (row_tile x tile "
                                 "pairs per compiled call; ~256 pairs is a good size).")
_KERNEL = flags.DEFINE_enum(
    "kernel", "ntk", ["ntk", "rbf_standin"], "ntk: the WRN-28 NTK of bilevel_jax.ntk. "
    "rbf_standin: a Gaussian kernel on log-mels, a STAND-IN for smoke runs only.")
_TIMING_FEATURES = flags.DEFINE_enum(
    "timing_features", "real", ["real", "synthetic"], "timing part: real NTK Nystrom features "
    "(needs the kernel for --m_timing landmarks) or SYNTHETIC ones of the same shapes.")
_EIG_CUTOFF = flags.DEFINE_float("eig_cutoff", 1e-6, "Nystrom: eigenvalues below cutoff * "
                                 "largest are dropped (pseudo-inverse).")


def _meta() -> dict:
  return {"command": _command(), "kernel": _KERNEL.value,
          "kernel_is_stand_in": _KERNEL.value != "ntk"}


def _command() -> str:
  return " ".join([pathlib.Path(sys.executable).name, "-m", "experiments.bilevel_evidence"]
                  + sys.argv[1:])


# ----------------------------------------------------------------------------------------------
# Features: NTK rows against landmarks, Nystrom map, banks of augmented copies.


@jax.jit
def _rbf_standin(x1, x2):
  """STAND-IN kernel (not the paper's): exp(-||x1 - x2||^2 / (2 * 0.05 * D)) on log-mels."""
  d = x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)
  sq = jnp.sum(d[0] ** 2, 1)[:, None] + jnp.sum(d[1] ** 2, 1)[None] - 2 * d[0] @ d[1].T
  return jnp.exp(-jnp.maximum(sq, 0) / (2 * 0.05 * d[0].shape[1]))


_DEPTH = 28         # WRN-28 NTK


def _kernel_rows(x: np.ndarray, landmarks: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
  """Kernel of x (N, 32, 32, 1) against landmarks (M, 32, 32, 1), not cached. -> (N, M)."""
  if _KERNEL.value == "rbf_standin":
    return np.concatenate([np.asarray(_rbf_standin(x[i:i + 256], landmarks))
                           for i in range(0, len(x), 256)])
  return km.kernel_rows(x, landmarks, km.make_config(depth=_DEPTH), tile=tile)[0]


_COL_BLOCK = 500    # landmarks per cached column block
_ROW_CHUNK = 320    # rows per resumable block of the kernel cache


class Features:
  """Clean Nystrom features of train/test and cached augmented banks, for m <= m_max landmarks.

  The kernel of a split against the landmarks is cached (`ntk.cache`, under
  workdir/ntk_cache) in column blocks of 500 landmarks (in permutation order), each written in
  resumable row blocks, so m = 500 is usable as soon as its block is done and an interrupted run
  loses at most one row block. The rbf_standin kernel is cheap and not cached.

  Attributes:
    perm: (P,) landmark permutation of the training indices; landmarks for m are perm[:m].
  """

  def __init__(self, workdir: pathlib.Path, train_x, test_x, waveforms, noise, *, m_max,
               landmark_seed, aug_seed, n_aug, tile, eig_cutoff):
    self.workdir, self.tile, self.n_aug, self.eig_cutoff = workdir, tile, n_aug, eig_cutoff
    self.x = {"train": train_x, "test": test_x}
    self.waveforms, self.noise = waveforms, noise
    p = len(train_x)
    if not 1 <= m_max <= p:
      raise ValueError(f"--m_max={m_max} must be in [1, {p}] (landmarks come from the pool).")
    self.perm = np.random.default_rng(landmark_seed).permutation(p)
    self.landmarks_x = train_x[self.perm[:m_max]]
    self.kernel_dir = workdir / "ntk_cache"   # keys hash the inputs and landmarks themselves
    self.bank_dir = workdir / f"banks_{_KERNEL.value}_lseed{landmark_seed}_aseed{aug_seed}_A{n_aug}"
    self.aug_key = jax.random.key(aug_seed)
    self.bank_seconds = 0.0
    self.banks_made = 0

  def _block(self, split: str, block: int) -> np.ndarray:
    """Kernel of `split` vs landmarks [500 * block, 500 * (block + 1)) (cached). -> (N, <=500)."""
    cols = slice(block * _COL_BLOCK, (block + 1) * _COL_BLOCK)
    x = self.x[split]
    if _KERNEL.value == "rbf_standin":
      return _kernel_rows(x, self.landmarks_x[cols], (_ROW_TILE.value, self.tile))
    kw = dict(kind="ntk", depth=_DEPTH, block_rows=_ROW_CHUNK, tile=(_ROW_TILE.value, self.tile),
              cache_dir=self.kernel_dir, progress=True)
    if split == "train":                        # landmarks are training clips: rows perm[cols]
      return np.asarray(ntk_cache.landmark_kernel(x, self.perm[cols], **kw).matrix)
    return np.asarray(ntk_cache.cross_kernel(x, self.landmarks_x[cols], **kw).matrix)

  @functools.lru_cache(maxsize=None)
  def kernel(self, split: str, m: int) -> np.ndarray:
    """(N, m) kernel of the clean `split` clips vs the first m landmarks."""
    blocks = [self._block(split, b) for b in range(-(-m // _COL_BLOCK))]
    return np.concatenate(blocks, axis=1)[:, :m]

  @functools.lru_cache(maxsize=None)
  def nystrom(self, m: int) -> np.ndarray:
    """(m, m) map K_UU^(+1/2) for the first m landmarks (symmetric, pseudo-inverse sqrt)."""
    k_uu = self.kernel("train", m)[self.perm[:m]]
    return nystrom_lib.fit_nystrom(k_uu, rcond=self.eig_cutoff).projection

  def train_z(self, m: int) -> np.ndarray:
    return self.kernel("train", m) @ self.nystrom(m)     # (P, m)

  def test_z(self, m: int) -> np.ndarray:
    return self.kernel("test", m) @ self.nystrom(m)      # (T, m)

  def _bank_rows(self, index: int, m: int) -> np.ndarray:
    """NTK rows (A, m) of the A augmented copies of training clip `index` (disk cache)."""
    for mm in (m, len(self.landmarks_x)):   # rows against more landmarks serve too
      path = self.bank_dir / f"{index}_m{mm}.npy"
      if path.exists():
        return np.load(path)[:, :m]
    t0 = time.time()
    key = jax.random.fold_in(self.aug_key, index)
    wave = jnp.broadcast_to(jnp.asarray(self.waveforms[index]), (self.n_aug,) + self.waveforms.shape[1:])
    x = np.asarray(_augment_featurize(key, wave, self.noise))
    rows = _kernel_rows(x, self.landmarks_x[:m], (self.n_aug, self.tile))
    io.atomic_save_npy(self.bank_dir / f"{index}_m{m}.npy", rows)
    self.bank_seconds += time.time() - t0
    self.banks_made += 1
    return rows

  def bank(self, index: int, m: int) -> np.ndarray:
    """Nystrom features (A, m) of the augmented copies of training clip `index`."""
    return self._bank_rows(index, m) @ self.nystrom(m)

  def banks(self, indices, m: int) -> np.ndarray:
    return np.stack([self.bank(int(i), m) for i in indices])   # (L, A, m)

  @functools.lru_cache(maxsize=None)   # one bank_fn object per m: select compiles once
  def host_bank(self, m: int) -> select.HostBank:
    return select.HostBank(lambda index, key_data: self.bank(index, m), self.n_aug, m)


_augment_featurize = jax.jit(audio.augment_and_featurize)


# ----------------------------------------------------------------------------------------------
# The proxy model: L2 logistic regression on Nystrom features of augmented labeled copies.


def fit_model(feats: Features, labeled, labels, m, c, key, clean_z=None):
  """Returns w (m, c): Adam (inner.fit_inner) with true labels on the labeled points' banks of
  augmented copies, or on their clean features clean_z[labeled] when clean_z (P, m) is given."""
  if clean_z is None:
    z = jnp.asarray(feats.banks(labeled, m))                  # (L, A, m)
  else:
    z = jnp.asarray(clean_z[np.asarray(labeled)][:, None])    # (L, 1, m)
  bank = inner.Bank(z, jax.nn.one_hot(jnp.asarray(labels), c), jnp.ones(len(labeled), bool))
  state = inner.init_inner_state(jnp.zeros((m, c), jnp.float32))
  state, loss = inner.fit_inner(key, state, bank, _LR.value, _L2.value, steps=_STEPS.value,
                                batch_size=_BATCH.value, reduction=_LOSS_REDUCTION.value)
  return state.w, float(loss)


def lbfgs_objective(feats, labeled, labels, m, c):
  """Optimum of the model's objective (full batch, scipy L-BFGS, float64): a check that Adam
  with --lr / --inner_steps actually solves it."""
  import scipy.optimize  # pylint: disable=g-import-not-at-top
  z = feats.banks(labeled, m).astype(np.float64)
  y = np.eye(c)[np.asarray(labels)]
  a = z.shape[1]

  def f(wf):
    w = wf.reshape(m, c)
    logits = np.einsum("sam,mc->sac", z, w)
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    val = -np.mean(np.sum(y[:, None] * np.log(np.maximum(p, 1e-300)), -1)) + _L2.value * wf @ wf
    g = np.einsum("sam,sac->mc", z, p - y[:, None]) / (len(z) * a) + 2 * _L2.value * w
    return val, g.ravel()

  res = scipy.optimize.minimize(f, np.zeros(m * c), jac=True, method="L-BFGS-B",
                                options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15})
  return float(res.fun)


def run_lr_check(feats, classes, c, out_dir):
  """Gap between Adam (--inner_steps, --batch_size) and the L-BFGS optimum of the model's
  objective on seed 0's 10 labeled banks, per learning rate: picks a usable --lr."""
  m = _M_FIRST.value
  labeled = class_covering_labels(classes, c, 0)
  opt = lbfgs_objective(feats, labeled, classes[labeled], m, c)
  rows = []
  for lr in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1):
    bank = inner.Bank(jnp.asarray(feats.banks(labeled, m)),
                      jax.nn.one_hot(jnp.asarray(classes[labeled]), c), jnp.ones(c, bool))
    state = inner.init_inner_state(jnp.zeros((m, c), jnp.float32))
    state, loss = inner.fit_inner(jax.random.key(0), state, bank, lr, _L2.value,
                                  steps=_STEPS.value, batch_size=_BATCH.value,
                                  reduction=_LOSS_REDUCTION.value)
    rows.append({"lr": lr, "adam_objective": float(loss), "gap": float(loss) - opt})
  out = {**_meta(), "m": m, "n_aug": feats.n_aug, "l2": _L2.value, "steps": _STEPS.value,
         "batch_size": _BATCH.value, "lbfgs_optimum": opt, "runs": rows,
         "mean_feature_norm": float(np.mean(np.linalg.norm(feats.train_z(m), axis=1)))}
  io.atomic_write_json(out_dir / f"lr_check_m{m}.json", out)
  print("lr_check", json.dumps(rows), flush=True)
  return out


def _softmax(a):
  a = a - a.max(axis=1, keepdims=True)
  e = np.exp(a)
  return e / e.sum(axis=1, keepdims=True)


def class_covering_labels(classes: np.ndarray, c: int, seed: int) -> np.ndarray:
  """One random training index per class (the paper's class-covering initial pool)."""
  rng = np.random.default_rng(1000 + seed)
  return np.array([rng.choice(np.flatnonzero(classes == k)) for k in range(c)], np.int32)


def _select(method, key, feats, pool_z, pseudo, labeled, labels, m, rng):
  """Indices of the next batch by `method`; returns (indices, extra diagnostics)."""
  b = _B.value
  available = np.setdiff1d(np.arange(len(pool_z)), labeled)
  if method == "uniform":
    return rng.choice(available, b, replace=False), {}
  if method == "max_entropy":
    ent = -np.sum(pseudo * np.log(np.maximum(pseudo, 1e-12)), axis=1)
    return available[np.argsort(-ent[available], kind="stable")[:b]], {}
  if method != "bilevel":
    raise ValueError(f"unknown method {method!r}")
  sel = select.select_batch(
      key, pool_z, pseudo, np.asarray(labeled, np.int32), np.asarray(labels, np.int32),
      feats.banks(labeled, m), feats.host_bank(m), None, b=b, lr=_LR.value, l2=_L2.value,
      inner_steps=_STEPS.value, batch_size=_BATCH.value, cg_steps=_CG.value,
      solver=_SOLVER.value, loss_reduction=_LOSS_REDUCTION.value)
  sel = jax.device_get(sel)
  return np.asarray(sel.indices), {
      "is_bilevel": sel.is_bilevel, "scores": sel.scores, "inner_loss": sel.inner_loss,
      "outer_loss": sel.outer_loss, "cg_residual": sel.cg_residual}


# ----------------------------------------------------------------------------------------------
# Parts.


def run_first_batch(feats, classes, c, out_dir):
  m, rows = _M_FIRST.value, []
  pool_z = feats.train_z(m)
  for seed in range(_SEEDS.value):
    path = out_dir / f"first_batch_m{m}" / f"seed{seed}.json"
    if path.exists():
      rows.append(io.read_json(path))
      continue
    key = jax.random.fold_in(jax.random.key(seed), 1)
    labeled = class_covering_labels(classes, c, seed)
    w, model_loss = fit_model(feats, labeled, classes[labeled], m, c, jax.random.fold_in(key, 0))
    pseudo = _softmax(pool_z @ np.asarray(w))
    pred = pseudo.argmax(axis=1)
    row = {"seed": seed, "m": m, "n_aug": feats.n_aug, "labeled": labeled,
           "model_train_loss": model_loss,
           "model_train_loss_optimum_lbfgs": lbfgs_objective(feats, labeled, classes[labeled], m, c),
           "model_pool_accuracy": float(np.mean(np.delete(pred == classes, labeled))),
           "methods": {}}
    for method in ("bilevel", "uniform", "max_entropy"):
      t0 = time.time()
      idx, diag = _select(method, jax.random.fold_in(key, 1), feats, pool_z, pseudo, labeled,
                          classes[labeled], m, np.random.default_rng(seed))
      row["methods"][method] = {
          "indices": idx, "true_classes": classes[idx], "predicted": pred[idx],
          "classes_covered": int(len(np.unique(classes[idx]))),
          "misclassified": int(np.sum(pred[idx] != classes[idx])),
          "seconds": time.time() - t0, **diag}
    row.update(_meta())
    io.atomic_write_json(path, row)
    rows.append(row)
    print(f"first_batch seed {seed}: " + ", ".join(
        f"{k}: {v['classes_covered']} classes, {v['misclassified']} misclassified"
        for k, v in row["methods"].items()), flush=True)
  summary = {**_meta(), "m": m, "n_aug": feats.n_aug, "b": _B.value,
             "seeds": len(rows), "paper_bilevel": {"classes_covered": 9, "misclassified": 9}}
  for method in ("bilevel", "uniform", "max_entropy"):
    cov = [r["methods"][method]["classes_covered"] for r in rows]
    mis = [r["methods"][method]["misclassified"] for r in rows]
    summary[method] = {"classes_covered_mean": float(np.mean(cov)),
                       "classes_covered_std": float(np.std(cov)), "classes_covered": cov,
                       "misclassified_mean": float(np.mean(mis)),
                       "misclassified_std": float(np.std(mis)), "misclassified": mis}
  summary["model_pool_accuracy"] = [r["model_pool_accuracy"] for r in rows]
  io.atomic_write_json(out_dir / f"first_batch_m{m}.json", summary)
  return summary


def run_al_curve(feats, classes, test_classes, c, out_dir):
  m, b = _M_CURVE.value, _B.value
  pool_z, test_z = feats.train_z(m), feats.test_z(m)
  start = c
  rounds = (_FINAL_LABELS.value - start) // b
  results = {}
  for method in ("bilevel", "uniform"):
    for seed in range(_SEEDS.value):
      path = out_dir / f"al_curve_m{m}" / f"{method}_seed{seed}.json"
      if path.exists():
        results[(method, seed)] = io.read_json(path)
        continue
      key = jax.random.fold_in(jax.random.key(seed), 2)
      rng = np.random.default_rng(seed)
      labeled = class_covering_labels(classes, c, seed)
      accs, n_labels, diags, t_sel = [], [], [], []
      for r in range(rounds + 1):
        w, _ = fit_model(feats, labeled, classes[labeled], m, c, jax.random.fold_in(key, 2 * r),
                         clean_z=pool_z)
        w = np.asarray(w)
        accs.append(float(np.mean((test_z @ w).argmax(axis=1) == test_classes)))
        n_labels.append(len(labeled))
        if r == rounds:
          break
        pseudo = _softmax(pool_z @ w)
        t0 = time.time()
        idx, diag = _select(method, jax.random.fold_in(key, 2 * r + 1), feats, pool_z, pseudo,
                            labeled, classes[labeled], m, rng)
        t_sel.append(time.time() - t0)
        diags.append(diag)
        labeled = np.concatenate([labeled, np.asarray(idx, np.int32)])
      row = {"method": method, "seed": seed, "m": m, "n_aug": feats.n_aug, "b": b,
             "n_labels": n_labels, "test_accuracy": accs, "labeled": labeled,
             "selection_seconds": t_sel, "diagnostics": diags, **_meta()}
      io.atomic_write_json(path, row)
      results[(method, seed)] = row
      print(f"al_curve {method} seed {seed}: {np.round(accs, 3).tolist()}", flush=True)
  summary = {**_meta(), "m": m, "n_aug": feats.n_aug, "b": b,
             "seeds": _SEEDS.value, "model": "L2 logistic regression (Adam, "
             f"{_STEPS.value} steps, batch {_BATCH.value}, lr {_LR.value}, l2 {_L2.value}) on "
             "clean Nystrom features of the labeled points (the bilevel inner problem uses "
             f"{feats.n_aug} augmented copies per point)"}
  for method in ("bilevel", "uniform"):
    acc = np.array([results[(method, s)]["test_accuracy"] for s in range(_SEEDS.value)])
    summary[method] = {"n_labels": results[(method, 0)]["n_labels"],
                       "test_accuracy_mean": acc.mean(0), "test_accuracy_std": acc.std(0),
                       "per_seed": acc}
  io.atomic_write_json(out_dir / f"al_curve_m{m}.json", summary)
  return summary


def _timing_inputs(feats, classes, c, m):
  """Real inputs: clean pool features, model pseudo-labels, cached banks via HostBank."""
  pool_z = jnp.asarray(feats.train_z(m))
  labeled = class_covering_labels(classes, c, 0)
  w, _ = fit_model(feats, labeled, classes[labeled], m, c, jax.random.key(0))
  pseudo = jnp.asarray(_softmax(np.asarray(pool_z) @ np.asarray(w)))
  return (pool_z, pseudo, jnp.asarray(labeled), jnp.asarray(classes[labeled], jnp.int32),
          jnp.asarray(feats.banks(labeled, m)), feats.host_bank(m), None)


def _synthetic_timing_inputs(classes, c, m, n_aug, norm):
  """SYNTHETIC inputs of the real shapes (values do not change the work: loop counts are
  fixed): Gaussian features with the real mean feature norm, Dirichlet pseudo-labels,
  precomputed random banks."""
  rng = np.random.default_rng(0)
  p = len(classes)
  pool_z = (rng.normal(size=(p, m)) * norm / np.sqrt(m)).astype(np.float32)
  bank = pool_z[:, None] + 0.1 * norm / np.sqrt(m) * rng.normal(size=(p, n_aug, m)).astype(np.float32)
  pseudo = rng.dirichlet(np.ones(c), p).astype(np.float32)
  labeled = class_covering_labels(classes, c, 0)
  bank_fn, bank_params = select.precomputed_bank(bank)
  return (jnp.asarray(pool_z), jnp.asarray(pseudo), jnp.asarray(labeled),
          jnp.asarray(classes[labeled], jnp.int32), jnp.asarray(bank[labeled]), bank_fn,
          bank_params)


def run_timing(feats, classes, c, out_dir):
  m = _M_TIMING.value
  synthetic = _TIMING_FEATURES.value == "synthetic"
  if synthetic:
    norm = float(np.mean(np.linalg.norm(feats.train_z(_M_CURVE.value), axis=1)))
    args = _synthetic_timing_inputs(classes, c, m, feats.n_aug, norm)
  else:
    args = _timing_inputs(feats, classes, c, m)
  kwargs = dict(b=_B.value, uniform_fraction=0.1, lr=_LR.value, l2=_L2.value,
                inner_steps=_STEPS.value, batch_size=_BATCH.value, cg_steps=_CG.value,
                solver=_SOLVER.value, loss_reduction=_LOSS_REDUCTION.value)
  t0 = time.time()
  select.validate_inputs(*args, **kwargs)
  validate_s = time.time() - t0
  n_bil, n_uni = select.split_batch(_B.value, 0.1)
  static = dict(bank_fn=args[5], n_bilevel=n_bil, n_uniform=n_uni, inner_steps=_STEPS.value,
                batch_size=_BATCH.value, cg_steps=_CG.value, inner_solver=inner.fit_inner_steps,
                solver=_SOLVER.value, reduction=_LOSS_REDUCTION.value, inner_max_iter=50,
                ihvp_max_iter=1000, newton_cg_max_iter=200)
  traced = lambda key: (key, *args[:5], args[6], jnp.float32(_LR.value),
                        jnp.float32(_L2.value), jnp.zeros((m, c), jnp.float32), None,
                        jnp.float32(1e-6), jnp.float32(1e-4))
  jax.clear_caches()   # earlier parts compiled the same program: time a cold compile
  t0 = time.time()
  compiled = select._select.lower(*traced(jax.random.key(0)), **static).compile()  # pylint: disable=protected-access
  compile_s = time.time() - t0
  runs = []
  for rep, key_seed in enumerate([0, 0, 1, 1]):
    bank_s0, made0 = feats.bank_seconds, feats.banks_made
    t0 = time.time()
    sel = jax.block_until_ready(compiled(*traced(jax.random.key(key_seed))))
    total = time.time() - t0
    runs.append({"rep": rep, "key": key_seed, "total_s": total,
                 "new_banks": feats.banks_made - made0,
                 "bank_s": feats.bank_seconds - bank_s0,
                 "selection_s": total - (feats.bank_seconds - bank_s0),
                 "indices": np.asarray(sel.indices), "cg_residual": np.asarray(sel.cg_residual),
                 "inner_loss": np.asarray(sel.inner_loss)})
    print(f"timing m={m} rep {rep}: {total:.2f}s total, {runs[-1]['new_banks']} new banks in "
          f"{runs[-1]['bank_s']:.2f}s", flush=True)
  cached = [r["selection_s"] for r in runs if r["new_banks"] == 0]
  out = {**_meta(), "features": "SYNTHETIC (real shapes)" if synthetic else "real NTK Nystrom",
         "pool_size": int(args[0].shape[0]), "m": m, "c": c,
         "b": _B.value, "n_bilevel": n_bil, "n_uniform": n_uni, "n_aug": feats.n_aug,
         "inner_steps": _STEPS.value, "batch_size": _BATCH.value, "cg_steps": _CG.value,
         "validate_s": validate_s, "compile_s": compile_s, "runs": runs,
         "selection_s_cached_banks_min": min(cached) if cached else None,
         "devices": [str(d) for d in jax.devices()],
         "note": "compile_s: select's jit lower().compile(); runs call the compiled program. "
                 "With real features, a key's first run makes the picks' augmented copies (NTK "
                 "rows, bank_s); a repeat reads them from the disk cache. Machine: 2 CPU cores "
                 "shared with other jobs, so absolute times are pessimistic."}
  io.atomic_write_json(out_dir / f"timing_m{m}{'_synthetic' if synthetic else ''}.json", out)
  return out


def main(argv):
  del argv
  unknown = set(_PARTS.value) - {"kernel", "initial_banks", "lr_check", "first_batch", "al_curve",
                                 "timing"}
  if unknown:
    raise app.UsageError(f"--parts has unknown entries {sorted(unknown)}; expected a subset "
                         "of kernel, initial_banks, lr_check, first_batch, al_curve, timing.")
  for name, m, part in (("m_first", _M_FIRST.value, "first_batch"),
                        ("m_curve", _M_CURVE.value, "al_curve"),
                        ("m_timing", _M_TIMING.value, "timing")):
    synthetic = part == "timing" and _TIMING_FEATURES.value == "synthetic"
    if part in _PARTS.value and not synthetic and not 1 <= m <= _M_MAX.value:
      raise app.UsageError(f"--{name}={m} must be in [1, --m_max={_M_MAX.value}].")
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  out_dir = pathlib.Path(_RESULTS.value)
  ds = data_lib.load_dataset("fsdd", _DATA_ROOT.value)
  noise = jnp.asarray(data_lib.load_background_noise(_DATA_ROOT.value))
  c = len(ds.class_names)
  classes = np.asarray(ds.train.labels)
  train_x = np.asarray(audio.featurize(jnp.asarray(ds.train.waveforms)))
  test_x = np.asarray(audio.featurize(jnp.asarray(ds.test.waveforms)))
  feats = Features(workdir, train_x, test_x, np.asarray(ds.train.waveforms), noise,
                   m_max=_M_MAX.value, landmark_seed=_LANDMARK_SEED.value,
                   aug_seed=_AUG_SEED.value, n_aug=_N_AUG.value, tile=_TILE.value,
                   eig_cutoff=_EIG_CUTOFF.value)
  if "kernel" in _PARTS.value:
    for block in range(-(-_M_MAX.value // _COL_BLOCK)):   # block 0 (m = 500) first
      for split in ("train", "test"):
        feats._block(split, block)  # pylint: disable=protected-access
  if "initial_banks" in _PARTS.value:   # banks of every seed's initial labels, ahead of time
    for seed in range(_SEEDS.value):
      for i in class_covering_labels(classes, c, seed):   # NTK rows only: no pool kernel needed
        feats._bank_rows(int(i), max(_M_FIRST.value, _M_CURVE.value))  # pylint: disable=protected-access
      print(f"initial banks of seed {seed} ready", flush=True)
  if "lr_check" in _PARTS.value:
    run_lr_check(feats, classes, c, out_dir)
  if "first_batch" in _PARTS.value:
    print(json.dumps(run_first_batch(feats, classes, c, out_dir), default=str)[:2000])
  if "al_curve" in _PARTS.value:
    run_al_curve(feats, classes, np.asarray(ds.test.labels), c, out_dir)
  if "timing" in _PARTS.value:
    run_timing(feats, classes, c, out_dir)


if __name__ == "__main__":
  app.run(main)
