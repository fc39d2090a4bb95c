"""MixMatch / supervised training on FSDD (Figure 1 of Borsos et al. 2021).

  python -m experiments.ssl_vs_supervised --config=experiments/configs/mixmatch.py:cpu \
      --workdir=runs/ssl_vs_supervised_cpu

Scales (same code, `get_config(arg)`):
  paper: WRN-28-2, 1e5 Adam steps, batch 64, EMA 0.999, lambda_u ramp over 16k steps
         (accelerator; see docs/training.md for the command).
  cpu:   WRN-10-1 (16/32/64 channels), 1000 steps, EMA 0.99, ramp over 400 steps; a MixMatch
         step cost ~0.44 s on 2 idle CPU cores (train_many's host loop; ~7.6 s inside a lax
         loop on XLA:CPU), now ~0.79x that (one augmentation pass per batch, sliced kernel
         gradients; benchmarks/results/cpu_step_profile.json), i.e. ~6 min for one seed alone;
         with train_many stepping two seeds at a time (train.seed_threads), 6 seeds at 60
         labels took 5.0 min per seed on 2 idle cores, compile and eval included
         (results/ssl_vs_supervised/fsdd_cpu_scale_cpu2_mixmatch60.json).
  tiny:  WRN-10-1, 6 steps, 2 seeds, label counts (10,), for tests and quick checks (the
         smallest mode of every config is `tiny`; "smoke" is accepted as its old name).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str = "cpu") -> ml_collections.ConfigDict:
  arg = "tiny" if arg == "smoke" else arg
  if arg not in ("tiny", "cpu", "paper"):
    raise ValueError(f"mixmatch config arg must be 'tiny', 'cpu' or 'paper', got {arg!r}.")
  c = ml_collections.ConfigDict()
  c.scale = arg
  c.dataset = "fsdd"
  c.data_root = ""  # "" -> $BILEVEL_JAX_DATA, else ../shared/data
  c.seed = 0
  c.num_seeds = 6
  c.label_counts = (60, 10, 30)  # 60 first: the headline count
  c.methods = ("mixmatch", "supervised_aug", "supervised")
  c.eval_batch_size = 256
  c.progress = True
  # Train a (label count, method)'s seeds in one program (vmapped on accelerators, stepped from
  # host threads on CPU) or one after another. WRN-28-2 on one H200: one after another ran
  # 1.64x faster than vmapped (grouped convolutions; benchmarks/results/vmap_seeds_h200_paper.json),
  # so the paper scale trains them in sequence; on CPU one program with threads is 1.19x faster.
  c.seeds_together = arg != "paper"

  t = ml_collections.ConfigDict()
  t.method = "mixmatch"  # overwritten per method by the experiment
  t.steps = 100_000
  t.batch_size = 64
  t.lr = 1e-3
  t.lr_end = 1e-5
  t.ema_decay = 0.999
  t.weight_decay = 0.02
  t.lambda_u = 10.0
  t.rampup_steps = 16_000
  t.temperature = 0.5
  t.mixup_alpha = 0.75
  t.num_augmentations = 2
  t.model = "wide_resnet"
  t.depth = 28
  t.width = 2
  t.bn_momentum = 0.999
  t.log_every = 500
  t.checkpoint_every = 5000
  t.seed_mode = "auto"  # host loop over seeds and steps on CPU, vmap on accelerators
  t.seed_threads = 0  # host loop: seeds stepped at the same time (0: min(seeds, CPU cores))
  t.precision = "float32"  # or "bfloat16": bf16 convolutions, float32 params/optimizer state
  t.steps_per_call = 1  # host loop: steps per jitted call (lax.scan); vmap runs log_every
  c.train = t

  if arg in ("cpu", "tiny"):
    t.depth, t.width = 10, 1
    t.steps = 1000
    t.ema_decay = 0.99
    t.bn_momentum = 0.99
    t.rampup_steps = 400
    t.log_every = 50
    t.checkpoint_every = 250
  if arg == "tiny":
    c.num_seeds = 2
    c.label_counts = (10,)
    t.steps = 6
    t.rampup_steps = 3
    t.log_every = 2
    t.checkpoint_every = 2
    t.batch_size = 16
  return c
