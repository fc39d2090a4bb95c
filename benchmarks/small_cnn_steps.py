"""Probe (committed for its numbers in benchmarks/results/cpu_training.json): see that file."""

import time, sys, jax
from bilevel_jax import data as D
from bilevel_jax.ssl import train as T, evaluate as E
from bilevel_jax.ssl.labels import labeled_sets
from experiments.configs import mixmatch

ds = D.load_dataset("fsdd", progress=False)
noise = D.load_background_noise()
steps = int(sys.argv[1])
nlab = int(sys.argv[2])
tc = T.TrainConfig.from_config(
  mixmatch.get_config("cpu").train,
  model="small_cnn",
  steps=steps,
  rampup_steps=int(0.4 * steps),
  log_every=100,
  checkpoint_every=steps,
)
lab = labeled_sets(ds.train.labels, nlab, 1, 10, 0)
t = time.time()
res = T.train_many(
  tc,
  ds.train.waveforms,
  ds.train.labels,
  lab,
  jax.random.split(jax.random.key(0), 1),
  num_classes=10,
  noise=noise,
  progress=False,
)
ev = E.evaluate(res.classifiers[0], ds.test.waveforms, ds.test.labels, 10)
print(
  "steps",
  steps,
  "labels",
  nlab,
  "acc",
  ev.accuracy,
  "wall",
  time.time() - t,
  "s/step",
  1 / res.steps_per_second,
  flush=True,
)
