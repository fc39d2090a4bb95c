"""Profile of one cpu-scale MixMatch step (WRN-10-1, batch 64 + 2 x 64) on XLA:CPU, by pieces,
and side-by-side step times of code variants (the previous step vs the current one).

  python -m benchmarks.cpu_step_profile all --rounds=5 --compare_rounds=10 \
      --reps=2 --variants=before,front_end_only,after,chunk32,chunk8,after_ynn_off,\
after_concurrency_sched      # -> benchmarks/results/cpu_step_profile.json (step_profile)

Variants (VARIANTS): "before" = make_step's previous front end (one augment_and_featurize call
for the labeled and one for the unlabeled batch) and plain autodiff kernel gradients
(weight_grad_chunk=0); "after" = the current defaults. Everything runs in one process: pieces
and steps are jitted, timed with block_until_ready and interleaved in rounds, so that the
background jobs sharing the 2 cores hit all variants alike; medians over rounds, wall and
process-CPU seconds, and ratios. Prints one JSON object (with the command).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bilevel_jax import audio
from bilevel_jax import data as D
from bilevel_jax.audio import augmentations
from bilevel_jax.ssl import mixmatch
from bilevel_jax.ssl import step as step_lib
from bilevel_jax.ssl import train as T
from experiments.configs import mixmatch as mm_config


def setup(num_labels: int = 60):
  ds = D.load_dataset("fsdd", progress=False)
  noise = D.load_background_noise()
  w = np.asarray(ds.train.waveforms, np.float32)
  y = np.asarray(ds.train.labels)
  rng = np.random.default_rng(0)
  lab = np.concatenate(
    [rng.choice(np.flatnonzero(y == c), num_labels // 10, replace=False) for c in range(10)]
  )
  tc = T.TrainConfig.from_config(mm_config.get_config("cpu").train)
  model = T.create_model(tc, 10)
  data = T.TrainData(
    jnp.asarray(w),
    jnp.asarray(y, jnp.int32),
    jnp.asarray(noise),
    jnp.float32(0.5),
    jnp.float32(0.2),
  )
  return tc, model, data, jnp.asarray(lab, jnp.int32)


def timed(fn, *args, reps: int = 1) -> tuple[float, float]:
  """(wall, process CPU) seconds per call; CPU time is what other jobs on the cores disturb least."""
  t, c = time.perf_counter(), time.process_time()
  for _ in range(reps):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / reps, (time.process_time() - c) / reps


def _pieces(tc, model, data, lab, state, grouped: bool) -> dict:
  """Jitted pieces of one MixMatch step (as in ssl.train.make_step) and their arguments."""
  b, k_aug, nc = tc.batch_size, tc.num_augmentations, 10
  k_lab, k_unl, k_auglab, k_augunl, k_mix = jax.random.split(jax.random.key(1), 5)
  norm = lambda f: (f - data.feature_mean) / data.feature_std

  def gather(data, lab):
    n_lab = lab.shape[0]
    idx = lab[jax.random.choice(k_lab, n_lab, (b,), replace=n_lab < b)]
    uidx = jax.random.choice(k_unl, data.waveforms.shape[0], (b,), replace=False)
    return data.waveforms[idx], jnp.tile(data.waveforms[uidx], (k_aug, 1)), data.labels[idx]

  def augment_only(wx, wu, noise):
    if grouped:
      px = augmentations.sample_params(k_auglab, wx.shape[0], noise.shape)
      pu = augmentations.sample_params(k_augunl, wu.shape[0], noise.shape)
      p = jax.tree.map(lambda *v: jnp.concatenate(v), px, pu)
      return augmentations.apply_params(p, jnp.concatenate([wx, wu]), noise)
    return audio.augment(k_auglab, wx, noise), audio.augment(k_augunl, wu, noise)

  def featurize_only(a):
    return audio.featurize(a) if grouped else tuple(map(audio.featurize, a))

  def front_end(data, lab):
    wx, wu, yl = gather(data, lab)
    if grouped:
      x, u = augmentations.augment_and_featurize_groups([k_auglab, k_augunl], [wx, wu], data.noise)
    else:
      x = audio.augment_and_featurize(k_auglab, wx, data.noise)
      u = audio.augment_and_featurize(k_augunl, wu, data.noise)
    return norm(x), norm(u), jax.nn.one_hot(yl, nc)

  def forward(params, batch_stats, inputs):
    (logits, _), upd = model.apply(
      {"params": params, "batch_stats": batch_stats}, inputs, train=True, mutable=["batch_stats"]
    )
    return logits, upd["batch_stats"]

  def guess(params, batch_stats, u):
    logits_u, _ = forward(params, batch_stats, u)
    return mixmatch.guess_labels(logits_u.reshape(k_aug, b, nc), tc.temperature)

  def mix(x, y, u, q):
    return mixmatch.mixmatch_batch(k_mix, x, y, u, jnp.tile(q, (k_aug, 1)), tc.mixup_alpha)

  def fwd_bwd(params, batch_stats, inputs, targets):
    def loss_fn(p):
      logits, stats = forward(p, batch_stats, inputs)
      loss, _ = mixmatch.mixmatch_loss(logits, targets, b, jnp.float32(5.0))
      return loss, stats

    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  optimizer = T.make_optimizer(tc)

  def update(st, grads):
    updates, opt_state = optimizer.update(grads, st.opt_state, st.params)
    params = optax.apply_updates(st.params, updates)
    params = step_lib._decay_kernels(params, 1.0 - tc.weight_decay * T.lr_schedule(tc)(st.step))
    t = st.step.astype(jnp.float32)
    decay = jnp.minimum(tc.ema_decay, (1.0 + t) / (10.0 + t))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, st.ema_params, params)
    return params, opt_state, ema

  aug = audio.augment_and_featurize if grouped else _two_call_front_end
  step = jax.jit(T.make_step(tc, model, nc, audio.featurize, aug))
  jf = {
    n: jax.jit(f)
    for n, f in dict(
      gather=gather,
      augment=augment_only,
      featurize=featurize_only,
      front_end=front_end,
      guess=guess,
      mix=mix,
      fwd_bwd=fwd_bwd,
      update=update,
    ).items()
  }
  wx, wu, _ = jf["gather"](data, lab)
  augmented = jf["augment"](wx, wu, data.noise)
  x, u, y1 = jf["front_end"](data, lab)
  q = jf["guess"](state.params, state.batch_stats, u)
  inputs, targets = jf["mix"](x, y1, u, q)
  (_, _), grads = jf["fwd_bwd"](state.params, state.batch_stats, inputs, targets)
  return {
    "step": (step, (state, data, lab)),
    "front_end (gather+augment+log-mel, 192 clips)": (jf["front_end"], (data, lab)),
    "  augment only": (jf["augment"], (wx, wu, data.noise)),
    "  log-mel only": (jf["featurize"], (augmented,)),
    "label-guess forward (128)": (jf["guess"], (state.params, state.batch_stats, u)),
    "mixup": (jf["mix"], (x, y1, u, q)),
    "train forward+backward (192)": (
      jf["fwd_bwd"],
      (state.params, state.batch_stats, inputs, targets),
    ),
    "adam+decay+ema update": (jf["update"], (state, grads)),
  }


def profile(names: list[str], rounds: int) -> dict:
  """Median wall / CPU seconds of the step's pieces per variant, pieces interleaved."""
  tc, model, data, lab = setup()
  calls = {}
  for name in names:
    grouped, chunk, options = VARIANTS[name]
    if options:
      raise ValueError(f"profile runs default compile options; variant {name!r} sets {options}")
    m = model.clone(weight_grad_chunk=chunk)
    state = T.init_state(tc, m, jax.random.key(0))
    for piece, call in _pieces(tc, m, data, lab, state, grouped).items():
      calls[(name, piece)] = call
  for fn, args in calls.values():  # compile + warm
    timed(fn, *args, reps=2)
  wall = {k: [] for k in calls}
  cpu = {k: [] for k in calls}
  for _ in range(rounds):
    for k, (fn, args) in calls.items():
      w, c = timed(fn, *args, reps=3)
      wall[k].append(w)
      cpu[k].append(c)
  out = {}
  for name in names:
    step_w = statistics.median(wall[(name, "step")])
    step_c = statistics.median(cpu[(name, "step")])
    out[name] = {
      piece: {
        "wall_s": statistics.median(wall[k]),
        "cpu_s": statistics.median(cpu[k]),
        "wall_ratio_to_step": statistics.median(wall[k]) / step_w,
        "cpu_ratio_to_step": statistics.median(cpu[k]) / step_c,
      }
      for k in calls
      if k[0] == name
      for piece in [k[1]]
    }
  return out


def kernel_grad(rounds: int) -> dict:
  """CPU ms of one WRN-10-1 layer's kernel gradient (batch 192): plain autodiff vs slices."""
  from bilevel_jax.models import wide_resnet  # pylint: disable=import-outside-toplevel

  dn = ("NHWC", "HWIO", "NHWC")
  layers = [
    (32, 1, 16, 1, 3),
    (32, 16, 16, 1, 3),
    (32, 16, 32, 2, 3),
    (16, 32, 32, 1, 3),
    (16, 32, 64, 2, 3),
    (8, 64, 64, 1, 3),
    (32, 16, 32, 2, 1),
  ]  # (H, Cin, Cout, s, k)
  rng = np.random.default_rng(0)
  calls = {}
  for h, ci, co, st, k in layers:
    x = jnp.asarray(rng.standard_normal((192, h, h, ci)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, ci, co)), jnp.float32)
    dy = jnp.asarray(rng.standard_normal((192, -(-h // st), -(-h // st), co)), jnp.float32)
    for chunk in (0, 48, 16, 8):
      conv = wide_resnet.chunked_weight_grad_conv(chunk)
      f = jax.jit(
        lambda x, w, dy, conv=conv, st=st: jax.vjp(
          lambda w_: conv(x, w_, (st, st), "SAME", dimension_numbers=dn), w
        )[1](dy)[0]
      )
      calls[f"{ci}->{co} {h}x{h} k{k} s{st} chunk{chunk}"] = (f, (x, w, dy))
  for fn, args in calls.values():
    timed(fn, *args, reps=1)
  cpu = {n: [] for n in calls}
  for _ in range(rounds):
    for n, (fn, args) in calls.items():
      cpu[n].append(timed(fn, *args, reps=3)[1])
  return {"cpu_ms": {n: 1e3 * statistics.median(v) for n, v in cpu.items()}}


def step_time(reps: int) -> dict:
  """Median seconds of the current jitted, donated step (for XLA flag comparisons)."""
  tc, model, data, lab = setup()
  state = T.init_state(tc, model, jax.random.key(0))
  step = jax.jit(
    T.make_step(tc, model, 10, audio.featurize, audio.augment_and_featurize), donate_argnums=0
  )
  for _ in range(2):
    state, _ = step(state, data, lab)
  jax.block_until_ready(state)
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    state, _ = step(state, data, lab)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  return {"median_s": statistics.median(times), "all_s": times}


def _two_call_front_end(key, waveforms, noise):
  """audio.augment_and_featurize without its `groups` attribute: make_step's previous path."""
  return audio.augment_and_featurize(key, waveforms, noise)


VARIANTS = {
  # name: (batched front end, WideResNet.weight_grad_chunk, XLA compile options)
  "before": (False, 0, {}),
  "front_end_only": (True, 0, {}),
  "after": (True, None, {}),  # the defaults: batched front end, slices of 16 on CPU
  "chunk48": (True, 48, {}),
  "chunk32": (True, 32, {}),
  "chunk16": (True, 16, {}),
  "chunk8": (True, 8, {}),
  "after_ynn_off": (True, None, {"xla_cpu_experimental_ynn_fusion_type": ""}),
  "after_concurrency_sched": (True, None, {"xla_cpu_enable_concurrency_optimized_scheduler": True}),
  "after_ynn_conv_only": (
    True,
    None,
    {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"},
  ),
  "after_ynn_conv_dot": (
    True,
    None,
    {
      "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
    },
  ),
}


def compare(names: list[str], rounds: int, reps: int) -> dict:
  """Interleaved wall and process-CPU seconds per step of step variants, one process."""
  tc, model, data, lab = setup()
  runs, first = {}, {}
  for name in names:
    grouped, chunk, options = VARIANTS[name]
    aug = audio.augment_and_featurize if grouped else _two_call_front_end
    step = T.make_step(tc, model.clone(weight_grad_chunk=chunk), 10, audio.featurize, aug)
    state = T.init_state(tc, model, jax.random.key(0))
    fn = jax.jit(step, donate_argnums=0).lower(state, data, lab).compile(compiler_options=options)
    state, metrics = fn(state, data, lab)
    first[name] = (jax.device_get(metrics), jax.device_get(state.batch_stats))
    state, _ = fn(state, data, lab)
    jax.block_until_ready(state)
    runs[name] = [fn, state]
  wall = {n: [] for n in names}
  cpu = {n: [] for n in names}
  for _ in range(rounds):
    for name in names:
      fn, state = runs[name]
      t, c = time.perf_counter(), time.process_time()
      for _ in range(reps):
        state, _ = fn(state, data, lab)
      jax.block_until_ready(state)
      wall[name].append((time.perf_counter() - t) / reps)
      cpu[name].append((time.process_time() - c) / reps)
      runs[name][1] = state
  med_w = {n: statistics.median(v) for n, v in wall.items()}
  med_c = {n: statistics.median(v) for n, v in cpu.items()}
  # Same keys, data and init: the first step's losses and batch-norm statistics (functions of
  # the features and activations of the MixMatch batch) must agree across variants.
  m0, s0 = first[names[0]]
  first_step = {
    n: {
      "loss": float(first[n][0]["loss"]),
      "max_abs_loss_diff": float(abs(first[n][0]["loss"] - m0["loss"])),
      "max_abs_batch_stats_diff": float(
        max(jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)), first[n][1], s0)))
      ),
    }
    for n in names
  }
  return {
    "wall_s_per_step": med_w,
    "cpu_s_per_step": med_c,
    "wall_ratio_to_first": {n: med_w[n] / med_w[names[0]] for n in names},
    "cpu_ratio_to_first": {n: med_c[n] / med_c[names[0]] for n in names},
    "first_step_vs_first_variant": first_step,
    "steps_each": 2 + rounds * reps,
    "wall_all_s": wall,
    "cpu_all_s": cpu,
  }


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("mode", choices=["profile", "step", "compare", "kernel_grad", "all"])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--reps", type=int, default=8)
  parser.add_argument("--variants", default="before,after")
  parser.add_argument("--compare_rounds", type=int, default=10)
  parser.add_argument("--profile_variants", default="before,after")
  args = parser.parse_args(argv)
  out = {"command": "python " + " ".join(sys.argv), "jax": jax.__version__}
  if args.mode in ("profile", "all"):
    out["profile"] = profile(args.profile_variants.split(","), args.rounds)
  if args.mode in ("kernel_grad", "all"):
    out["kernel_grad"] = kernel_grad(args.rounds)
  if args.mode == "all":
    out["compare"] = compare(args.variants.split(","), args.compare_rounds, args.reps)
  if args.mode == "compare":
    out.update(compare(args.variants.split(","), args.rounds, args.reps))
  if args.mode == "step":
    out["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    out.update(step_time(args.reps))
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main(sys.argv[1:])
