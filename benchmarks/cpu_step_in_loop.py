"""Probe (committed for its numbers in benchmarks/results/cpu_training.json): see that file."""

import time, sys, jax, jax.numpy as jnp, numpy as np
from bilevel_jax import data as D
from bilevel_jax.ssl import train as T
from experiments.configs import mixmatch

ds = D.load_dataset("fsdd", progress=False)
noise = D.load_background_noise()
w = np.asarray(ds.train.waveforms)
y = np.asarray(ds.train.labels)
lab = np.array([np.flatnonzero(y == c)[0] for c in range(10)])
tc = T.TrainConfig.from_config(mixmatch.get_config("cpu").train)
model = T.create_model(tc, 10)
feat, aug = T.default_audio()
step = T.make_step(tc, model, 10, feat, aug)
data = T.TrainData(
  jnp.asarray(w), jnp.asarray(y, jnp.int32), jnp.asarray(noise), jnp.float32(0), jnp.float32(1)
)
state = T.init_state(tc, model, jax.random.key(0), (32, 32, 1))
labj = jnp.asarray(lab, jnp.int32)
mode = sys.argv[1]
if mode == "plain":
  f = jax.jit(step)
  s, m = f(state, data, labj)
  jax.block_until_ready(s)
  t = time.time()
  for _ in range(3):
    s, m = f(s, data, labj)
    jax.block_until_ready(s)
  print("plain jit step", (time.time() - t) / 3)
elif mode in ("none", "map", "vmap"):
  run = T.make_run_steps(step, None if mode == "none" else mode)
  st = state if mode == "none" else jax.tree.map(lambda v: v[None], state)
  li = labj if mode == "none" else labj[None]
  st, m = run(st, data, li, jnp.int32(1))
  jax.block_until_ready(st)
  t = time.time()
  st, m = run(st, data, li, jnp.int32(3))
  jax.block_until_ready(st)
  print(mode, "fori step", (time.time() - t) / 3)
if mode == "mapplain":
  one = lambda st, d, li: jax.lax.map(lambda a: step(a[0], d, a[1]), (st, li))
  f = jax.jit(one)
  st = jax.tree.map(lambda v: jnp.stack([v, v]), state)
  li = jnp.stack([labj, labj])
  s, m = f(st, data, li)
  jax.block_until_ready(s)
  t = time.time()
  s, m = f(s, data, li)
  jax.block_until_ready(s)
  print("map 2 seeds plain jit per step", (time.time() - t))
  f = jax.jit(jax.vmap(step, in_axes=(0, None, 0)))
  s, m = f(st, data, li)
  jax.block_until_ready(s)
  t = time.time()
  s, m = f(s, data, li)
  jax.block_until_ready(s)
  print("vmap 2 seeds plain jit per step", (time.time() - t))
