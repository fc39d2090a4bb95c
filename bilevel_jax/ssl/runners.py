"""Seed runners: drive a one-model step for S seeds (vmapped, lax.map, host threads, in turn).

Every runner is run(state (S, ...), data, labeled_idx (S, L), num_steps) -> (state, mean
metrics over the steps); the state is donated. `TrainConfig.seed_mode` picks one:
  vmap       one program, seeds batched, a chunk of steps in a lax loop (accelerators).
  map        one program, lax.map over seeds, steps in a lax loop.
  host       a jitted one-model step (or `steps_per_call` steps, lax.scan) called from Python,
             seeds spread over threads (CPU: XLA:CPU runs the step's convolutions ~17x slower
             inside a loop body, and vmap makes them grouped convolutions, slow too).
  vmap_host  a jitted vmapped step (or chunk of steps) called from Python.
  auto       host on the CPU backend, vmap elsewhere.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bilevel_jax.ssl import step as step_lib
from bilevel_jax.ssl.state import AugmentFeaturizeFn, FeaturizeFn, TrainConfig

RunSteps = Callable  # (state, data, labeled_idx, num_steps) -> (state, metrics)


@functools.lru_cache(maxsize=16)
def compiled_run_steps(
  tc: TrainConfig,
  model: nn.Module,
  num_classes: int,
  featurize_fn: FeaturizeFn,
  augment_featurize_fn: AugmentFeaturizeFn,
) -> RunSteps:
  """Cached runner for `tc`, so repeated trainings with equal settings compile once."""
  step = step_lib.cached_step(
    step_lib.step_settings(tc), model, num_classes, featurize_fn, augment_featurize_fn
  )
  return make_run_steps(
    step,
    seed_mode=resolve_seed_mode(tc.seed_mode),
    seed_threads=tc.seed_threads,
    steps_per_call=tc.steps_per_call,
  )


def resolve_seed_mode(mode: str) -> str:
  """ "auto" -> "host" on the CPU backend, "vmap" elsewhere; other modes unchanged."""
  if mode == "auto":
    return "host" if jax.default_backend() == "cpu" else "vmap"
  return mode


def scan_steps(step: Callable, k: int) -> Callable:
  """k steps as one function (lax.scan): (state, data, lab) -> (state, metrics summed)."""

  def chunk(state, data, labeled_idx):
    state, metrics = jax.lax.scan(lambda st, _: step(st, data, labeled_idx), state, None, length=k)
    return state, jax.tree.map(lambda v: v.sum(0), metrics)

  return chunk


def _host_steps(
  step_jit: Callable, chunk_jit: Callable | None, k: int, state, data, labeled_idx, n: int
):
  """n steps from Python: n // k calls of the k-step chunk, then single steps; mean metrics."""
  acc = None
  calls = (
    [(chunk_jit, k)] * (n // k) + [(step_jit, 1)] * (n % k) if chunk_jit else ([(step_jit, 1)] * n)
  )
  for fn, _ in calls:
    state, m = fn(state, data, labeled_idx)
    acc = m if acc is None else jax.tree.map(jnp.add, acc, m)
  return state, jax.tree.map(lambda v: v / max(n, 1), acc)


def _jitted(step: Callable, steps_per_call: int, vmapped: bool):
  wrap = (lambda f: jax.vmap(f, in_axes=(0, None, 0))) if vmapped else (lambda f: f)
  step_jit = jax.jit(wrap(step), donate_argnums=0)
  chunk_jit = (
    jax.jit(wrap(scan_steps(step, steps_per_call)), donate_argnums=0)
    if steps_per_call > 1
    else None
  )
  return step_jit, chunk_jit


def _vmap_host_run_steps(step: Callable, steps_per_call: int = 1) -> RunSteps:
  step_jit, chunk_jit = _jitted(step, steps_per_call, vmapped=True)
  return lambda state, data, labeled_idx, num_steps: _host_steps(
    step_jit, chunk_jit, steps_per_call, state, data, labeled_idx, int(num_steps)
  )


def seed_thread_count(seed_threads: int, num_seeds: int) -> int:
  """Threads for the host loop: seed_threads, or min(S, CPU cores) when 0."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  wanted = seed_threads or (cores or 1)
  return max(1, min(wanted, num_seeds))


# JAX config entries that `with jax.<context>(...)` blocks set for their own thread only.
_THREAD_LOCAL_CONFIG = (
  "jax_default_matmul_precision",
  "jax_default_device",
  "jax_disable_jit",
  "jax_enable_x64",
  "jax_numpy_rank_promotion",
  "jax_numpy_dtype_promotion",
  "jax_debug_nans",
  "jax_debug_infs",
  "jax_default_prng_impl",
)


def _thread_config() -> tuple:
  return tuple(getattr(jax.config, name, None) for name in _THREAD_LOCAL_CONFIG)


def config_reaches_threads() -> bool:
  """Whether a new thread traces with this thread's JAX config: False inside e.g.
  `with jax.default_matmul_precision(...)`, whose setting is thread-local."""
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    return pool.submit(_thread_config).result() == _thread_config()


def _host_run_steps(step: Callable, seed_threads: int = 1, steps_per_call: int = 1) -> RunSteps:
  """A jitted one-model step called from Python, seeds spread over `seed_thread_count` threads
  (JAX releases the GIL while XLA runs, so the seeds' steps overlap). Each seed's numbers are
  those of seed_threads=1. Inside a thread-local JAX config context (e.g.
  `with jax.default_matmul_precision(...)`, which worker threads would not see) the seeds step
  one at a time in the calling thread instead, so they train under that context."""
  step_jit, chunk_jit = _jitted(step, steps_per_call, vmapped=False)

  def run(state, data, labeled_idx, num_steps):
    num_seeds = labeled_idx.shape[0]
    one_seed = lambda s: _host_steps(
      step_jit,
      chunk_jit,
      steps_per_call,
      jax.tree.map(lambda v: v[s], state),
      data,
      labeled_idx[s],
      int(num_steps),
    )
    workers = seed_thread_count(seed_threads, num_seeds)
    if workers > 1 and config_reaches_threads():
      with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        per_seed = list(pool.map(one_seed, range(num_seeds)))
    else:
      per_seed = [one_seed(s) for s in range(num_seeds)]
    return jax.tree.map(lambda *v: jnp.stack(v), *per_seed)

  return run


def make_run_steps(
  step: Callable, seed_mode: str | None, seed_threads: int = 1, steps_per_call: int = 1
) -> RunSteps:
  """(state, data, labeled_idx, num_steps) -> (state, mean metrics over the steps).

  With seed_mode "vmap", "map", "host" or "vmap_host" the state/labeled_idx carry a leading
  seed axis (data are shared); None runs a single unbatched model. "vmap", "map" and None make
  the whole chunk one jitted program with num_steps traced (a while loop), so chunks of any
  length share one compilation; "host" jits one step of one model, "vmap_host" one step of
  all S models, and both loop in Python (num_steps >= 1), `steps_per_call` steps per call;
  "host" steps `seed_threads` seeds at a time (0: min(S, CPU cores)).
  """
  if seed_mode == "host":
    return _host_run_steps(step, seed_threads, steps_per_call)
  if seed_mode == "vmap_host":
    return _vmap_host_run_steps(step, steps_per_call)
  if seed_mode == "vmap":
    one = jax.vmap(step, in_axes=(0, None, 0))
  elif seed_mode == "map":

    def one(state, data, labeled_idx):
      return jax.lax.map(lambda a: step(a[0], data, a[1]), (state, labeled_idx))
  else:
    one = step

  def run(state, data, labeled_idx, num_steps):
    _, metrics_shape = jax.eval_shape(one, state, data, labeled_idx)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape)

    def body(_, carry):
      st, acc = carry
      st, m = one(st, data, labeled_idx)
      return st, jax.tree.map(jnp.add, acc, m)

    state, total = jax.lax.fori_loop(0, num_steps, body, (state, zeros))
    n = jnp.maximum(num_steps, 1).astype(jnp.float32)
    return state, jax.tree.map(lambda v: v / n, total)

  return jax.jit(run, donate_argnums=0)
