r"""Evidence for the bilevel batch selection on real FSDD data (issue 4, SPEC section 3).

  python -m experiments.bilevel_evidence --config=experiments/configs/bilevel_evidence.py \
      --workdir=runs/bilevel_evidence                                  # m = 500, ~1 h on 2 cores
  python -m experiments.bilevel_evidence --config=experiments/configs/bilevel_evidence.py \
      --config.parts=kernel,first_batch,timing --config.m_first=2000 --config.m_timing=2000 \
      --workdir=runs/bilevel_evidence                                  # paper's m
  python -m experiments.publish --run=runs/bilevel_evidence --to=results/bilevel_evidence

Parts (`config.parts`; JSON written atomically into --workdir with the command inside; reruns
resume per seed):
  kernel       fill the caches of k(train, U) and k(test, U) for every m the parts use.
  initial_banks  the augmented copies of every seed's initial labels, ahead of time.
  lr_check     gap of Adam (inner_steps, batch_size) to the L-BFGS optimum per learning rate.
  first_batch  10 class-covering labels per seed; pseudo-labels from L2 logistic regression on
               the Nystrom features of the labeled points' augmented copies; the first batch
               (b = 10) of bilevel, uniform and max-entropy (entropy of those pseudo-labels):
               classes covered and points that model misclassifies (paper Fig. 2: 9 and 9).
  al_curve     proxy active learning: logistic regression on clean Nystrom features is the
               model, 10 -> final_labels, bilevel vs uniform, test accuracy per round; one JSON
               per (method, seed).
  timing       the bilevel selection (b = 10) from the 2700-clip pool: first call (compile +
               run) and repeated calls.

Features and selection are the active-learning loop's own: the `bilevel` strategy's `prepare`
hook (`bilevel_jax.ntk.features`: landmarks drawn with `landmark_seed`, standardized clean
log-mels, k(X, U) cached, Nystrom map, augmented copies made inside the jitted selection) and
`strategies.select_with_diagnostics("bilevel", ...)`. The committed results in
results/bilevel_evidence/ were made by an earlier version with its own copy of this pipeline
(see that folder's README for what differs). The shared inputs of the parts (data, the strategy's
inputs per m, one selection by method) are in `experiments.evidence_inputs`.

Caveat: here the pseudo-labels come from the same proxy (logistic regression on the same
features) as the inner problem, so at step 0 the inner solution nearly minimises the pool part
of G and grad G is small; in the paper they come from MixMatch, a different, stronger model.
"""

from __future__ import annotations

import json
import pathlib
import shlex
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from bilevel_jax import data as data_lib
from bilevel_jax.bilevel import inner
from bilevel_jax.bilevel import select
from bilevel_jax.strategies import inputs as strategy_inputs
from bilevel_jax.utils import io
from experiments import configs
from experiments import evidence_inputs
from experiments import proxy_model
from experiments.configs import bilevel_evidence as evidence_config

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file (bilevel_evidence.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (result JSON).", required=True)


# ----------------------------------------------------------------------------------------------
# Parts.


def run_lr_check(run: evidence_inputs.Run):
  """Gap between Adam and the L-BFGS optimum of the model's objective on seed 0's labeled
  banks, per learning rate: picks a usable lr."""
  m, b = run.config.m_first, run.config.bilevel
  feats = evidence_inputs.inputs_for(run, m)
  labeled = proxy_model.class_covering_labels(run.classes, run.num_classes, 0)
  opt = proxy_model.lbfgs_objective(run, feats, labeled)
  rows = []
  for lr in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1):
    bank = inner.Bank(
      jnp.asarray(feats.banks(labeled)),
      jax.nn.one_hot(jnp.asarray(run.classes[labeled]), run.num_classes),
      jnp.ones(len(labeled), bool),
    )
    state = inner.init_inner_state(jnp.zeros((m, run.num_classes), jnp.float32))
    state, loss = inner.fit_inner(
      jax.random.key(0),
      state,
      bank,
      lr,
      b.l2,
      steps=b.inner_steps,
      batch_size=b.inner_batch_size or None,
      reduction=b.loss_reduction,
    )
    rows.append({"lr": lr, "adam_objective": float(loss), "gap": float(loss) - opt})
  out = {
    **evidence_inputs.meta(run),
    "m": m,
    "n_aug": feats.n_aug,
    "lbfgs_optimum": opt,
    "runs": rows,
    "mean_feature_norm": float(np.mean(np.linalg.norm(feats.train_z, axis=1))),
  }
  io.atomic_write_json(run.out_dir / f"lr_check_m{m}.json", out)
  print("lr_check", json.dumps(rows), flush=True)
  return out


def run_first_batch(run: evidence_inputs.Run):
  m, rows, c = run.config.m_first, [], run.num_classes
  feats = evidence_inputs.inputs_for(run, m)
  methods = ("bilevel", "uniform", "max_entropy")
  for seed in range(run.config.seeds):
    path = run.out_dir / f"first_batch_m{m}" / f"seed{seed}.json"
    if path.exists():
      rows.append(io.read_json(path))
      continue
    key = jax.random.fold_in(jax.random.key(seed), 1)
    labeled = proxy_model.class_covering_labels(run.classes, c, seed)
    w, model_loss = proxy_model.fit_model(run, feats, labeled, jax.random.fold_in(key, 0))
    pseudo = proxy_model.softmax(feats.train_z @ np.asarray(w))
    pred = pseudo.argmax(axis=1)
    row = {
      "seed": seed,
      "m": m,
      "n_aug": feats.n_aug,
      "labeled": labeled,
      "model_train_loss": model_loss,
      "model_train_loss_optimum_lbfgs": proxy_model.lbfgs_objective(run, feats, labeled),
      "model_pool_accuracy": float(np.mean(np.delete(pred == run.classes, labeled))),
      "methods": {},
    }
    for method in methods:
      t0 = time.time()
      idx, diag = evidence_inputs.select_by(
        run, method, jax.random.fold_in(key, 1), feats, pseudo, labeled, np.random.default_rng(seed)
      )
      row["methods"][method] = {
        "indices": idx,
        "true_classes": run.classes[idx],
        "predicted": pred[idx],
        "classes_covered": int(len(np.unique(run.classes[idx]))),
        "misclassified": int(np.sum(pred[idx] != run.classes[idx])),
        "seconds": time.time() - t0,
        **diag,
      }
    row.update(evidence_inputs.meta(run))
    io.atomic_write_json(path, row)
    rows.append(row)
    print(
      f"first_batch seed {seed}: "
      + ", ".join(
        f"{k}: {v['classes_covered']} classes, {v['misclassified']} misclassified"
        for k, v in row["methods"].items()
      ),
      flush=True,
    )
  summary = {
    **evidence_inputs.meta(run),
    "m": m,
    "n_aug": feats.n_aug,
    "seeds": len(rows),
    "paper_bilevel": {"classes_covered": 9, "misclassified": 9},
  }
  for method in methods:
    cov = [r["methods"][method]["classes_covered"] for r in rows]
    mis = [r["methods"][method]["misclassified"] for r in rows]
    summary[method] = {
      "classes_covered_mean": float(np.mean(cov)),
      "classes_covered_std": float(np.std(cov)),
      "classes_covered": cov,
      "misclassified_mean": float(np.mean(mis)),
      "misclassified_std": float(np.std(mis)),
      "misclassified": mis,
    }
  summary["model_pool_accuracy"] = [r["model_pool_accuracy"] for r in rows]
  io.atomic_write_json(run.out_dir / f"first_batch_m{m}.json", summary)
  return summary


def run_al_curve(run: evidence_inputs.Run):
  m, b, c = run.config.m_curve, run.config.batch_size_per_round, run.num_classes
  feats = evidence_inputs.inputs_for(run, m)
  pool_z, test_z = feats.train_z, feats.test_z()
  rounds = (run.config.final_labels - c) // b
  results = {}
  for method in ("bilevel", "uniform"):
    for seed in range(run.config.seeds):
      path = run.out_dir / f"al_curve_m{m}" / f"{method}_seed{seed}.json"
      if path.exists():
        results[(method, seed)] = io.read_json(path)
        continue
      key = jax.random.fold_in(jax.random.key(seed), 2)
      rng = np.random.default_rng(seed)
      labeled = proxy_model.class_covering_labels(run.classes, c, seed)
      accs, n_labels, diags, t_sel = [], [], [], []
      for r in range(rounds + 1):
        w, _ = proxy_model.fit_model(
          run, feats, labeled, jax.random.fold_in(key, 2 * r), clean=True
        )
        w = np.asarray(w)
        accs.append(float(np.mean((test_z @ w).argmax(axis=1) == run.test_classes)))
        n_labels.append(len(labeled))
        if r == rounds:
          break
        t0 = time.time()
        idx, diag = evidence_inputs.select_by(
          run,
          method,
          jax.random.fold_in(key, 2 * r + 1),
          feats,
          proxy_model.softmax(pool_z @ w),
          labeled,
          rng,
        )
        t_sel.append(time.time() - t0)
        diags.append(diag)
        labeled = np.concatenate([labeled, np.asarray(idx, np.int32)])
      row = {
        "method": method,
        "seed": seed,
        "m": m,
        "n_aug": feats.n_aug,
        "b": b,
        "n_labels": n_labels,
        "test_accuracy": accs,
        "labeled": labeled,
        "selection_seconds": t_sel,
        "diagnostics": diags,
        **evidence_inputs.meta(run),
      }
      io.atomic_write_json(path, row)
      results[(method, seed)] = row
      print(f"al_curve {method} seed {seed}: {np.round(accs, 3).tolist()}", flush=True)
  summary = {
    **evidence_inputs.meta(run),
    "m": m,
    "n_aug": feats.n_aug,
    "b": b,
    "seeds": run.config.seeds,
    "model": "L2 logistic regression (the bilevel block's Adam settings) on clean "
    "Nystrom features of the labeled points (the bilevel inner problem uses "
    f"{feats.n_aug} augmented copies per point)",
  }
  for method in ("bilevel", "uniform"):
    acc = np.array([results[(method, s)]["test_accuracy"] for s in range(run.config.seeds)])
    summary[method] = {
      "n_labels": results[(method, 0)]["n_labels"],
      "test_accuracy_mean": acc.mean(0),
      "test_accuracy_std": acc.std(0),
      "per_seed": acc,
    }
  io.atomic_write_json(run.out_dir / f"al_curve_m{m}.json", summary)
  return summary


def run_timing(run: evidence_inputs.Run):
  """The bilevel strategy's selection from the whole pool: first call and repeats."""
  m, c, b = run.config.m_timing, run.num_classes, run.config.bilevel
  labeled = proxy_model.class_covering_labels(run.classes, c, 0)
  synthetic = run.config.timing_features == "synthetic"
  feats = evidence_inputs.inputs_for(run, m)
  if synthetic:  # values do not change the work: loop counts are fixed
    rng = np.random.default_rng(0)
    norm = float(np.mean(np.linalg.norm(feats.train_z, axis=1)))
    pool_z = (rng.normal(size=feats.train_z.shape) * norm / np.sqrt(m)).astype(np.float32)
    pseudo = rng.dirichlet(np.ones(c), len(pool_z)).astype(np.float32)
  else:
    pool_z = feats.train_z
    w, _ = proxy_model.fit_model(run, feats, labeled, jax.random.key(0))
    pseudo = proxy_model.softmax(pool_z @ np.asarray(w)).astype(np.float32)
  ctx = feats.context(labeled)
  args = (
    jnp.asarray(pool_z),
    jnp.asarray(pseudo),
    jnp.asarray(labeled),
    jnp.asarray(run.classes[labeled], jnp.int32),
    jnp.asarray(ctx["bank"]),
  )
  kwargs = dict(
    b=run.config.batch_size_per_round,
    uniform_fraction=b.uniform_fraction,
    lr=b.lr,
    l2=b.l2,
    inner_steps=b.inner_steps,
    batch_size=b.inner_batch_size or None,
    cg_steps=b.cg_steps,
    solver=b.solver,
    loss_reduction=b.loss_reduction,
  )
  jax.clear_caches()  # earlier parts compiled the same program: time a cold compile
  runs = []
  for rep, key_seed in enumerate([0, 0, 1, 1]):
    t0 = time.time()
    sel = jax.block_until_ready(
      select.select_batch(
        jax.random.key(key_seed), *args, feats.kernel.bank_fn, ctx["bank_params"], **kwargs
      )
    )
    runs.append(
      {
        "rep": rep,
        "key": key_seed,
        "total_s": time.time() - t0,
        "indices": np.asarray(sel.indices),
        "cg_residual": np.asarray(sel.cg_residual),
        "inner_loss": np.asarray(sel.inner_loss),
      }
    )
    print(f"timing m={m} rep {rep}: {runs[-1]['total_s']:.2f}s", flush=True)
  out = {
    **evidence_inputs.meta(run),
    "features": "SYNTHETIC (real shapes)" if synthetic else "real NTK Nystrom",
    "pool_size": int(pool_z.shape[0]),
    "m": m,
    "c": c,
    "n_aug": feats.n_aug,
    "first_call_s": runs[0]["total_s"],
    "repeat_s_min": min(r["total_s"] for r in runs[1:]),
    "runs": runs,
    "devices": [str(d) for d in jax.devices()],
    "note": "first_call_s includes the compile; the augmented copies of picked points are "
    "made inside the jitted selection (NTK rows against the m landmarks), so every "
    "call includes them.",
  }
  io.atomic_write_json(run.out_dir / f"timing_m{m}{'_synthetic' if synthetic else ''}.json", out)
  return out


def check_config(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The parts to run; ValueError naming the entry for bad values, before any data is read."""
  parts = tuple(p.strip() for p in config.parts.split(",") if p.strip())
  unknown = sorted(set(parts) - set(evidence_config.PARTS))
  if unknown:
    raise ValueError(
      f"config.parts={config.parts!r} has unknown entries {unknown}; expected a "
      f"subset of {','.join(evidence_config.PARTS)}."
    )
  for name in ("m_first", "m_curve", "m_timing", "seeds", "batch_size_per_round"):
    if int(config[name]) < 1:
      raise ValueError(f"config.{name}={config[name]}; expected >= 1.")
  if config.timing_features not in ("real", "synthetic"):
    raise ValueError(
      f"config.timing_features={config.timing_features!r}; expected 'real' or 'synthetic'."
    )
  strategy_inputs.check_config("bilevel", config)
  return parts


def run_parts(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, command: str) -> None:
  parts = check_config(config)
  root = config.data_root or None
  ds = data_lib.load_dataset("fsdd", root, progress=config.progress)
  noise = np.asarray(data_lib.load_background_noise(root), np.float32)
  run = evidence_inputs.Run(
    config,
    evidence_inputs.Data(ds.name, np.asarray(ds.train.waveforms, np.float32), noise),
    np.asarray(ds.train.labels),
    np.asarray(ds.test.waveforms, np.float32),
    np.asarray(ds.test.labels),
    len(ds.class_names),
    pathlib.Path(workdir),
    command,
  )
  run.out_dir.mkdir(parents=True, exist_ok=True)
  evidence_inputs.INPUTS.clear()
  if "kernel" in parts:
    for m in sorted({config.m_first, config.m_curve, config.m_timing}):
      evidence_inputs.inputs_for(run, m).test_z()
  if "initial_banks" in parts:  # banks of every seed's initial labels, ahead of time
    for seed in range(config.seeds):
      labeled = proxy_model.class_covering_labels(run.classes, run.num_classes, seed)
      for m in sorted({config.m_first, config.m_curve}):
        evidence_inputs.inputs_for(run, m).banks(labeled)
  if "lr_check" in parts:
    run_lr_check(run)
  if "first_batch" in parts:
    print(json.dumps(run_first_batch(run), default=str)[:2000])
  if "al_curve" in parts:
    run_al_curve(run)
  if "timing" in parts:
    run_timing(run)


def main(argv):
  del argv
  command = "python -m experiments.bilevel_evidence " + " ".join(
    shlex.quote(a) for a in sys.argv[1:]
  )
  run_parts(_CONFIG.value, _WORKDIR.value, command)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=configs.parse_flags)  # old config names: a clear error
